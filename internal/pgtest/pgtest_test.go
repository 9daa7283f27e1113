package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/dockerprobe"
	"github.com/reservations/reservations/internal/pgserver"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		// Subprocess of a test below: run only the helper, no cleanup of
		// the shared server (the point is to see what happens without it).
		os.Exit(m.Run())
	}
	Main(m)
}

const helperEnv = "PGTEST_HELPER"

func TestNewGivesEachTestItsOwnDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := NewDatabase(t), NewDatabase(t)
	require.NotEqual(t, a.Name, b.Name)

	_, err := a.Pool.Exec(ctx, `CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (1)`)
	require.NoError(t, err)
	var n int
	require.NoError(t, a.Pool.QueryRow(ctx, `SELECT count(*) FROM only_in_a`).Scan(&n))
	assert.Equal(t, 1, n)
	_, err = b.Pool.Exec(ctx, `SELECT * FROM only_in_a`)
	assert.Error(t, err, "table of database a is visible in database b")

	// The DSN reaches the same database as the pool.
	conn, err := pgx.Connect(ctx, a.DSN)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var db string
	require.NoError(t, conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db))
	assert.Equal(t, a.Name, db)
}

func TestDatabaseDroppedAtCleanup(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("inner", func(t *testing.T) { name = NewDatabase(t).Name })

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, Shared(t).DSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n))
	assert.Zero(t, n, "database %s still exists after its test ended", name)
}

func TestSharedServerSettings(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	if !srv.CanRestart() {
		t.Logf("shared server from %s: settings are the server owner's", EnvDSN)
		return
	}
	pool := New(t)
	want := map[string]string{
		"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "200",
	}
	if srv.pg.Dir() != "" {
		want["listen_addresses"] = "127.0.0.1" // a container listens on its own interfaces
	}
	for name, want := range want {
		var got string
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT current_setting($1)`, name).Scan(&got))
		assert.Equal(t, want, got, name)
	}
}

// TestServerStopStart stops and starts a server of each kind this process can
// run: the throwaway cluster always, a container where a Docker engine answers.
func TestServerStopStart(t *testing.T) {
	t.Parallel()
	t.Run("local", func(t *testing.T) {
		t.Parallel()
		pg, err := pgserver.StartLocal(context.Background(), pgserver.Options{})
		require.NoError(t, err, howToGet())
		t.Cleanup(func() { assert.NoError(t, pg.Stop()) })
		checkStopStart(t, wrap(pg))
	})
	t.Run("container", func(t *testing.T) {
		t.Parallel()
		if err := dockerprobe.Engine(); err != nil {
			t.Skipf("no Docker engine: %v", err)
		}
		pg, err := pgserver.StartContainer(context.Background(), pgserver.Options{})
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, pg.Stop()) })
		checkStopStart(t, wrap(pg))
	})
}

// TestNewServerStopStart checks the server NewServer picks.
func TestNewServerStopStart(t *testing.T) {
	t.Parallel()
	checkStopStart(t, NewServer(t))
}

func checkStopStart(t *testing.T, srv *Server) {
	ctx := context.Background()
	require.True(t, srv.CanRestart())
	db := srv.NewDatabase(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)`)
	require.NoError(t, err)

	srv.Stop(t)
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = db.Pool.Exec(qctx, `SELECT 1`)
	cancel()
	require.Error(t, err, "query succeeded on a stopped server")
	srv.Stop(t) // idempotent

	srv.Start(t)
	srv.Start(t) // idempotent
	var x int
	require.Eventually(t, func() bool {
		return db.Pool.QueryRow(ctx, `SELECT x FROM kept`).Scan(&x) == nil
	}, 10*time.Second, 20*time.Millisecond, "pool does not reconnect after restart")
	assert.Equal(t, 42, x)
}

func TestDSNSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	private := NewServer(t)
	// The keyword/value form, as a developer might set RESERVATIONS_TEST_PG_DSN.
	u, err := url.Parse(private.DSN())
	require.NoError(t, err)
	pw, _ := u.User.Password()
	kv := fmt.Sprintf("host=%s port=%s user=%s password='%s' dbname=postgres sslmode=disable",
		u.Hostname(), u.Port(), u.User.Username(), pw)
	srv, err := openDSN(kv)
	require.NoError(t, err)
	assert.False(t, srv.CanRestart())
	db := srv.NewDatabase(t)
	var name string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT current_database()`).Scan(&name))
	assert.Equal(t, db.Name, name)

	_, err = openDSN(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", closedPort(t)))
	assert.Error(t, err)
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/t_x?sslmode=disable"},
		{"postgresql://h/", "postgresql://h/t_x"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=t_x"},
	} {
		got, err := withDatabase(tc.in, "t_x")
		require.NoError(t, err)
		assert.Equal(t, tc.want, got)
	}
}

func TestDatabaseName(t *testing.T) {
	n := databaseName("TestX/sub test#1-" + strings.Repeat("y", 100))
	assert.LessOrEqual(t, len(n), 63)
	assert.Regexp(t, `^t_[a-z0-9_]+$`, n)
	assert.NotEqual(t, n, databaseName("TestX/sub test#1-"+strings.Repeat("y", 100)))
}

// TestNoServerFails runs a test in a subprocess with an unreachable server and
// checks that it fails (not skips) and says how to get PostgreSQL.
func TestNoServerFails(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperNoServer$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=noserver",
		EnvDSN+fmt.Sprintf("=postgres://postgres@127.0.0.1:%d/postgres?connect_timeout=2", closedPort(t)))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "helper test passed: %v\n%s", err, out)
	assert.Contains(t, string(out), "--- FAIL: TestHelperNoServer")
	assert.NotContains(t, string(out), "SKIP")
	assert.Contains(t, string(out), "apt-get install -y postgresql")
	assert.Contains(t, string(out), EnvDSN)
}

func TestHelperNoServer(t *testing.T) {
	if os.Getenv(helperEnv) != "noserver" {
		return // subprocess helper of TestNoServerFails
	}
	New(t)
}

// TestFallbackToLocal runs the source selection in a subprocess whose
// DOCKER_HOST names a socket that does not exist: the Docker probe answers at
// once, and the shared server is the throwaway cluster (unless a Docker socket
// that testcontainers also tries exists on this machine).
func TestFallbackToLocal(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSource$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=source", EnvDSN+"=", dockerprobe.EnvDocker+"=",
		"DOCKER_HOST=unix://"+filepath.Join(home, "missing", "docker.sock"), "HOME="+home, "XDG_RUNTIME_DIR="+home)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "helper failed:\n%s", out)

	var probeMS int
	var probeErr, source string
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "PROBE "); ok {
			ms, msg, _ := strings.Cut(v, " ")
			probeMS, err = strconv.Atoi(ms)
			require.NoError(t, err, line)
			probeErr = msg
		}
		if v, ok := strings.CutPrefix(line, "SOURCE "); ok {
			source = v
		}
	}
	require.NotEmpty(t, source, "helper printed no source:\n%s", out)
	t.Logf("probe: %q after %d ms; source: %s", probeErr, probeMS, source)
	assert.Less(t, probeMS, 3000, "Docker probe of a missing socket took %d ms", probeMS)
	if dockerSocketHere() {
		t.Skip("a Docker socket exists here, so testcontainers may have used it instead of the throwaway cluster this test checks")
	}
	assert.Contains(t, probeErr, "ping Docker engine")
	assert.Contains(t, source, "throwaway cluster")
	assert.Contains(t, string(out), "passed over: no Docker engine")
}

func TestHelperSource(t *testing.T) {
	if os.Getenv(helperEnv) != "source" {
		return // subprocess helper of TestFallbackToLocal
	}
	start := time.Now()
	err := dockerprobe.Engine()
	msg := ""
	if err != nil {
		msg = strings.ReplaceAll(err.Error(), "\n", " ")
	}
	fmt.Printf("PROBE %d %s\n", time.Since(start).Milliseconds(), msg)
	pool := New(t)
	var one int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT 1`).Scan(&one))
	fmt.Printf("SOURCE %s\n", Shared(t).source)
}

// dockerSocketHere reports whether a Docker socket exists that testcontainers
// tries after DOCKER_HOST.
func dockerSocketHere() bool {
	for _, p := range []string{"/var/run/docker.sock", fmt.Sprintf("/run/user/%d/docker.sock", os.Getuid())} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
