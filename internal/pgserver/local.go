package pgserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reservations/reservations/internal/throwaway"
)

// dirPrefix names the temporary directories of throwaway clusters; the sweep
// of stale directories only ever touches directories with this prefix.
const dirPrefix = "reservations-pg-"

// Time limits of the throwaway cluster.
const (
	readyTimeout = 60 * time.Second // initdb done to first accepted connection
	stopTimeout  = 30 * time.Second // fast shutdown before escalating to immediate
)

// cluster is a throwaway PostgreSQL cluster run by this process.
type cluster struct {
	bin  string              // directory of initdb and postgres
	dir  string              // root: data/, the unix socket, postgres.log, owner.pid
	cred *syscall.Credential // nil: run as the current user
	port int
	// settings are the server's -c settings.
	settings []string

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{} // closed when proc has exited
	closed bool
}

// StartLocal creates and starts a local cluster, whatever opts.Docker says.
func StartLocal(ctx context.Context, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	base := tempBase()
	sweepStale(base)

	dir, err := os.MkdirTemp(base, dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c := &cluster{bin: bin, dir: dir, cred: cred, settings: append(opts.settings(), localSettings...)}
	if err := c.init(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	err = throwaway.StartOnFreePort(func(port int) error {
		c.port = port
		return c.start(ctx)
	})
	if err != nil {
		_ = c.close()
		return nil, err
	}
	return &Server{dsn: c.dsn(), source: fmt.Sprintf("throwaway cluster from %s in %s on port %d", bin, dir, c.port), ctl: c, dir: dir}, nil
}

// init writes the owner file and runs initdb.
func (c *cluster) init(ctx context.Context) error {
	// Written whole or not at all (rename), so that a parallel sweepStale
	// never reads a half-written owner.
	if err := throwaway.WriteOwner(c.dir); err != nil {
		return err
	}
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("chown cluster directory: %w", err)
		}
	}
	if err := os.Chmod(c.dir, 0o700); err != nil {
		return fmt.Errorf("chmod cluster directory: %w", err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "initdb"),
		"-D", filepath.Join(c.dir, "data"),
		"--auth=trust", "--username=postgres", "--encoding=UTF8", "--locale=C",
		"--no-sync", "--no-instructions")
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// dsn is the URL of the cluster's maintenance database.
func (c *cluster) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// resume starts postgres again after halt.
func (c *cluster) resume(ctx context.Context) error { return c.start(ctx) }

// start launches postgres and waits until it accepts connections. The server
// outlives ctx, which bounds only the wait.
func (c *cluster) start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("cluster closed")
	}
	if c.proc != nil {
		return nil // already running
	}
	logPath := filepath.Join(c.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	defer logFile.Close() // the child keeps its own descriptor

	args := []string{"-D", filepath.Join(c.dir, "data"), "-p", strconv.Itoa(c.port), "-k", c.dir}
	for _, s := range c.settings {
		args = append(args, "-c", s)
	}
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = procAttr(c.cred)

	// The parent-death signal fires when the thread that forked the child
	// exits, not the process: fork from a goroutine locked to its thread, which
	// stays alive (waiting for postgres) as long as postgres runs.
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

	if err := waitAccepting(ctx, c.dsn(), exited); err != nil {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-exited
		}
		logText, _ := os.ReadFile(logPath)
		if bytes.Contains(logText, []byte("could not bind")) || bytes.Contains(logText, []byte("already in use")) {
			return fmt.Errorf("postgres on port %d: %w", c.port, throwaway.ErrPortInUse)
		}
		return fmt.Errorf("postgres on port %d: %w\nserver log:\n%s", c.port, err, throwaway.Tail(logText, 4000))
	}
	c.proc, c.exited = cmd.Process, exited
	return nil
}

// waitAccepting polls dsn until the server accepts a connection, exited is
// closed (nil: never), ctx ends or readyTimeout passes.
func waitAccepting(ctx context.Context, dsn string, exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, dsn)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", readyTimeout, err)
		}
		select {
		case <-exited:
			return errors.New("exited before accepting connections")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last attempt: %w)", ctx.Err(), err)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// running reports whether postgres is up.
func (c *cluster) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc != nil
}

// halt shuts postgres down: fast shutdown, then immediate, then SIGKILL. ctx
// is not consulted: a shutdown once begun is seen through.
func (c *cluster) halt(context.Context) error { return c.stop() }

// stop shuts postgres down: fast shutdown, then immediate, then SIGKILL.
func (c *cluster) stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil
	}
	proc, exited := c.proc, c.exited
	c.proc, c.exited = nil, nil
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		if err := proc.Signal(sig); err != nil {
			break // already gone
		}
		select {
		case <-exited:
			return nil
		case <-time.After(stopTimeout):
		}
	}
	<-exited
	return nil
}

// close stops postgres and removes the cluster directory.
func (c *cluster) close() error {
	_ = c.stop()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("remove cluster directory: %w", err)
	}
	return nil
}

// findBinaries returns the directory holding initdb and postgres: the newest
// /usr/lib/postgresql/<version>/bin, else the directory of initdb on PATH.
func findBinaries() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type cand struct {
		dir string
		ver float64
	}
	var cands []cand
	for _, d := range dirs {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		if err != nil || !executable(filepath.Join(d, "initdb")) || !executable(filepath.Join(d, "postgres")) {
			continue
		}
		cands = append(cands, cand{d, v})
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ver > cands[j].ver })
	if len(cands) > 0 {
		return cands[0].dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if executable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin or on PATH")
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// serverCredential returns the user to run the server as: initdb and postgres
// refuse to run as root, so root runs them as the `postgres` OS user.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a `postgres` OS user to run the server as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has non-numeric uid %q or gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// tempBase returns the directory for cluster directories: os.TempDir when the
// server user can reach it and the unix socket path fits, else /tmp.
func tempBase() string {
	base := os.TempDir()
	// sun_path holds 107 bytes: base + /reservations-pg-NNNNNNNNNN/.s.PGSQL.NNNNN
	if len(base)+len(dirPrefix)+32 > 100 || !worldTraversable(base) {
		return "/tmp"
	}
	return base
}

// worldTraversable reports whether every directory on the path of dir can be
// entered by any user.
func worldTraversable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// sweepStale removes cluster directories whose owning process is gone
// (killed before it could clean up), stopping a postgres still running there.
func sweepStale(base string) {
	throwaway.SweepStale(base, dirPrefix, func(dir string) {
		if pid, ok := throwaway.PIDFile(filepath.Join(dir, "data", "postmaster.pid")); ok {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if slices.Contains(strings.Split(string(cmdline), "\x00"), filepath.Join(dir, "data")) {
				_ = syscall.Kill(pid, syscall.SIGQUIT)
			}
		}
	})
}
