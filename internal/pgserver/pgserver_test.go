package pgserver

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const helperEnv = "PGSERVER_HELPER"

// TestStartLocal checks the settings of a local cluster, Halt and Resume on
// the same port, and that Stop removes its directory.
func TestStartLocal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, err := StartLocal(ctx, Options{MaxConnections: 300, SharedBuffers: "256MB"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	require.NotEmpty(t, srv.Dir())
	assert.Contains(t, srv.Source(), srv.Dir())

	conn, err := pgx.Connect(ctx, srv.DSN())
	require.NoError(t, err)
	for name, want := range map[string]string{
		"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
		"max_connections": "300", "shared_buffers": "256MB", "listen_addresses": "127.0.0.1",
	} {
		var got string
		require.NoError(t, conn.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&got))
		assert.Equal(t, want, got, name)
	}
	_, err = conn.Exec(ctx, `CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)`)
	require.NoError(t, err)
	conn.Close(ctx)

	require.NoError(t, srv.Halt(ctx))
	require.NoError(t, srv.Halt(ctx), "Halt is idempotent")
	assert.False(t, srv.Running())
	require.NoError(t, srv.Resume(ctx))
	require.NoError(t, srv.Resume(ctx), "Resume is idempotent")
	assert.True(t, srv.Running())
	conn, err = pgx.Connect(ctx, srv.DSN())
	require.NoError(t, err, "the DSN survives Halt and Resume")
	var x int
	require.NoError(t, conn.QueryRow(ctx, `SELECT x FROM kept`).Scan(&x))
	assert.Equal(t, 42, x)
	conn.Close(ctx)

	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Stop(), "Stop is idempotent")
	assert.NoDirExists(t, srv.Dir())
	assert.Error(t, srv.Resume(ctx), "a stopped server does not come back")
}

// TestStartWithoutDocker: Start without Options.Docker never asks for a
// container, and says nothing was passed over.
func TestStartWithoutDocker(t *testing.T) {
	t.Parallel()
	srv, err := Start(context.Background(), Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	assert.NotEmpty(t, srv.Dir(), "not a local cluster: %s", srv.Source())
	assert.Empty(t, srv.Notes())
}

// TestKilledProcessTakesServerDown starts a server in a subprocess, kills the
// subprocess with SIGKILL (no cleanup can run) and checks that the server goes
// down and its directory is swept by the next start.
func TestKilledProcessTakesServerDown(t *testing.T) {
	t.Parallel()
	if _, err := findBinaries(); err != nil {
		t.Fatalf("pgserver: %v (apt-get install -y postgresql)", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldServer$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=hold")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var dsn, dir string
	sc := bufio.NewScanner(stdout)
	for (dsn == "" || dir == "") && sc.Scan() {
		_, _ = fmt.Sscanf(sc.Text(), "DSN %s", &dsn)
		_, _ = fmt.Sscanf(sc.Text(), "DIR %s", &dir)
	}
	require.NotEmpty(t, dsn, "helper printed no DSN")
	require.NotEmpty(t, dir, "helper printed no directory")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err, "helper's server is not up")
	conn.Close(ctx)

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	require.Eventually(t, func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		conn, err := pgx.Connect(cctx, dsn+"&connect_timeout=1")
		if err == nil {
			conn.Close(ctx)
			return false
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "server of a killed process still accepts connections")

	sweepStale(filepath.Dir(dir))
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "directory %s of a dead process not swept: %v", dir, err)
}

func TestHelperHoldServer(t *testing.T) {
	if os.Getenv(helperEnv) != "hold" {
		return // subprocess helper of TestKilledProcessTakesServerDown
	}
	srv, err := Start(context.Background(), Options{})
	require.NoError(t, err)
	fmt.Printf("DSN %s\nDIR %s\n", srv.DSN(), srv.Dir())
	time.Sleep(time.Hour) // until killed
}

// sweepStale removes only directories whose owner is gone: not one whose
// owner file is still being written (empty), nor one of a live owner.
func TestSweepStaleSparesDirectoriesBeingCreated(t *testing.T) {
	base := t.TempDir()
	mk := func(owner *string) string {
		dir, err := os.MkdirTemp(base, dirPrefix)
		require.NoError(t, err)
		if owner != nil {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(*owner), 0o644))
		}
		return dir
	}
	empty, live := "", strconv.Itoa(os.Getpid())
	dead := "999999999" // above any pid_max
	creating, halfWritten, ours, gone := mk(nil), mk(&empty), mk(&live), mk(&dead)
	sweepStale(base)
	for _, d := range []string{creating, halfWritten, ours} {
		assert.DirExists(t, d)
	}
	assert.NoDirExists(t, gone)
}
