package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// postgres is the server the SQL baselines and the sink run against: the one
// named by a DSN, or a throwaway cluster the harness started.
type postgres struct {
	dsn      string
	version  string
	settings string
	local    *localPG
}

// localSettings are the server settings of the throwaway cluster. Durability
// is off on both sides of the comparison: kfake keeps its log in memory, and
// Postgres runs without fsync and synchronous commit, which can only flatter
// the SQL baselines.
var localSettings = []string{
	"listen_addresses=127.0.0.1",
	"fsync=off",
	"synchronous_commit=off",
	"full_page_writes=off",
	"max_connections=300",
	"shared_buffers=256MB",
	"log_min_messages=warning",
	"logging_collector=off",
}

// openPostgres connects to dsn, or starts a throwaway cluster when dsn is empty.
func openPostgres(ctx context.Context, dsn string, out io.Writer) (*postgres, error) {
	pg := &postgres{dsn: dsn}
	if dsn == "" {
		l, err := startLocalPG(ctx)
		if err != nil {
			return nil, fmt.Errorf("start a throwaway PostgreSQL (or pass a DSN): %w", err)
		}
		pg.local, pg.dsn = l, l.dsn
		fmt.Fprintf(out, "postgres: throwaway cluster in %s on port %d (%s)\n", l.dir, l.port, strings.Join(localSettings[1:4], ", "))
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, pg.dsn)
	if err != nil {
		pg.close()
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.Background())
	var fsync, syncCommit, shared, maxConns string
	err = conn.QueryRow(cctx, `SELECT current_setting('server_version'), current_setting('fsync'),
		current_setting('synchronous_commit'), current_setting('shared_buffers'), current_setting('max_connections')`).
		Scan(&pg.version, &fsync, &syncCommit, &shared, &maxConns)
	if err != nil {
		pg.close()
		return nil, fmt.Errorf("read postgres settings: %w", err)
	}
	pg.settings = fmt.Sprintf("fsync=%s synchronous_commit=%s shared_buffers=%s max_connections=%s", fsync, syncCommit, shared, maxConns)
	return pg, nil
}

func (pg *postgres) close() {
	if pg.local != nil {
		pg.local.close()
	}
}

// exec runs statements on the server's database.
func (pg *postgres) exec(ctx context.Context, sql ...string) error {
	conn, err := pgx.Connect(ctx, pg.dsn)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.Background())
	for _, s := range sql {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("exec %q: %w", firstLine(s), err)
		}
	}
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// pool returns a pool of size connections whose search_path is schema, with
// every connection opened before it is returned (connecting is not measured).
func (pg *postgres) pool(ctx context.Context, schema string, size int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(pg.dsn)
	if err != nil {
		return nil, fmt.Errorf("parse postgres DSN: %w", err)
	}
	cfg.MaxConns, cfg.MinConns = int32(size), int32(size)
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	conns := make([]*pgxpool.Conn, 0, size)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range size {
		c, err := pool.Acquire(cctx)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("open pool connections: %w", err)
		}
		conns = append(conns, c)
	}
	return pool, nil
}

// localPG is a throwaway PostgreSQL cluster: initdb into a temporary folder,
// postgres on a free loopback port; run as the postgres OS user when this
// process is root (initdb and postgres refuse root).
type localPG struct {
	dir    string
	port   int
	dsn    string
	proc   *os.Process
	exited chan struct{}
}

func startLocalPG(ctx context.Context) (*localPG, error) {
	bin, err := pgBinaries()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres OS user to run the server as: %w", err)
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("postgres user: non-numeric uid %q or gid %q", u.Uid, u.Gid)
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	dir, err := os.MkdirTemp("/tmp", "reservations-bench-pg-")
	if err != nil {
		return nil, fmt.Errorf("create cluster folder: %w", err)
	}
	l := &localPG{dir: dir}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			l.close()
			return nil, fmt.Errorf("chown cluster folder: %w", err)
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"--auth=trust", "--username=postgres", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		l.close()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	for attempt := range 5 {
		if l.port, err = freePort(); err != nil {
			break
		}
		if err = l.start(bin, cred); err == nil || attempt == 4 {
			break
		}
	}
	if err != nil {
		l.close()
		return nil, err
	}
	l.dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", l.port)
	return l, nil
}

// start runs postgres and waits until it accepts connections. The server is
// forked from a goroutine locked to its thread, so that the parent-death
// signal (Linux) takes it down if this process dies.
func (l *localPG) start(bin string, cred *syscall.Credential) error {
	logf, err := os.Create(filepath.Join(l.dir, "postgres.log"))
	if err != nil {
		return fmt.Errorf("create server log: %w", err)
	}
	defer logf.Close()
	args := []string{"-D", filepath.Join(l.dir, "data"), "-p", strconv.Itoa(l.port), "-k", l.dir}
	for _, s := range localSettings {
		args = append(args, "-c", s)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr(cred)
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			close(exited)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	l.proc, l.exited = cmd.Process, exited
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", l.port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(l.dir, "postgres.log"))
			l.proc = nil
			return fmt.Errorf("postgres exited before accepting connections:\n%s", tail(log, 2000))
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			l.stop()
			return fmt.Errorf("postgres not ready within 60s: %w", err)
		}
	}
}

// stop shuts the server down: fast shutdown, then immediate, then SIGKILL.
func (l *localPG) stop() {
	if l.proc == nil {
		return
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		if err := l.proc.Signal(sig); err != nil {
			break
		}
		select {
		case <-l.exited:
			l.proc = nil
			return
		case <-time.After(20 * time.Second):
		}
	}
	<-l.exited
	l.proc = nil
}

func (l *localPG) close() {
	l.stop()
	_ = os.RemoveAll(l.dir)
}

// pgBinaries returns the newest /usr/lib/postgresql/<version>/bin, else the
// folder of initdb on PATH.
func pgBinaries() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(a)), 64)
		vb, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(b)), 64)
		switch {
		case va > vb:
			return -1
		case va < vb:
			return 1
		}
		return 0
	})
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && isExec(filepath.Join(filepath.Dir(p), "postgres")) {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin or on PATH (apt-get install postgresql)")
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
