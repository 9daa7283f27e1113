// Package redisserver starts a throwaway redis-server for test and benchmark
// harnesses: Debian's redis-server binary (on PATH, else /usr/bin or
// /usr/sbin), run on a free loopback port with its own directory.
//
// It needs no testing.TB: internal/bench uses it directly, tests call Start
// and Stop.
//
// Invariants: a server started here listens on 127.0.0.1 only, writes no RDB
// snapshots (save ""), logs every write to its append-only file (appendonly
// yes) and fsyncs that file as Options.AppendFsync says (everysec by default,
// or always). Stop removes it with its directory. When the process dies
// without Stop, the kernel kills the server (parent-death signal, Linux) and
// the next Start of any process removes its directory. A machine without
// redis-server fails Start with a message naming `apt-get install
// redis-server`: nothing is skipped silently.
package redisserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reservations/reservations/internal/throwaway"
)

// Fsync policies of the append-only file (redis.conf appendfsync).
const (
	// FsyncEverysec fsyncs the append-only file once a second: a crash of
	// the machine loses up to a second of acknowledged writes.
	FsyncEverysec = "everysec"
	// FsyncAlways fsyncs it before a write is acknowledged.
	FsyncAlways = "always"
)

// InstallHint is what to run on a Debian machine without redis-server.
const InstallHint = "apt-get install redis-server"

// dirPrefix names the temporary directories of throwaway servers; the sweep
// of stale directories only ever touches directories with this prefix.
const dirPrefix = "reservations-redis-"

// Time limits of the throwaway server.
const (
	readyTimeout = 30 * time.Second // process started to first PONG
	stopTimeout  = 10 * time.Second // SIGTERM (shutdown) before SIGKILL
)

// Options configure Start.
type Options struct {
	// AppendFsync is the append-only file's fsync policy: FsyncEverysec
	// (default) or FsyncAlways.
	AppendFsync string
}

func (o Options) withDefaults() (Options, error) {
	switch o.AppendFsync {
	case "":
		o.AppendFsync = FsyncEverysec
	case FsyncEverysec, FsyncAlways:
	default:
		return o, fmt.Errorf("appendfsync %q: want %s or %s", o.AppendFsync, FsyncEverysec, FsyncAlways)
	}
	return o, nil
}

// Server is a redis-server this process started.
type Server struct {
	bin     string
	dir     string // root: data (append-only files), redis.log, redis.pid, owner.pid
	port    int
	fsync   string
	version string

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{} // closed when proc has exited
	closed bool
}

// Start starts a throwaway redis-server with opts. The server outlives ctx,
// which bounds only the start.
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	version, err := binaryVersion(ctx, bin)
	if err != nil {
		return nil, err
	}
	base := os.TempDir()
	sweepStale(base)
	dir, err := os.MkdirTemp(base, dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create redis directory: %w", err)
	}
	s := &Server{bin: bin, dir: dir, fsync: opts.AppendFsync, version: version}
	if err := throwaway.WriteOwner(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	err = throwaway.StartOnFreePort(func(port int) error {
		s.port = port
		return s.start(ctx)
	})
	if err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// fallbackDirs are searched for redis-server when it is not on PATH.
var fallbackDirs = []string{"/usr/bin", "/usr/sbin", "/usr/local/bin"}

// FindBinary returns the path of redis-server: on PATH, else /usr/bin or
// /usr/sbin. Its error names the package to install.
func FindBinary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, d := range fallbackDirs {
		p := filepath.Join(d, "redis-server")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("redis-server not found on PATH nor in /usr/bin, /usr/sbin: install it (Debian: `%s`)", InstallHint)
}

// binaryVersion runs `redis-server --version` and returns the version
// ("7.0.15").
func binaryVersion(ctx context.Context, bin string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	for f := range strings.FieldsSeq(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s --version: no v= in %q", bin, strings.TrimSpace(string(out)))
}

// Addr is the server's host:port (loopback).
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Dir is the server's directory: data/ (the append-only files), redis.log.
func (s *Server) Dir() string { return s.dir }

// Version is the redis-server version ("7.0.15").
func (s *Server) Version() string { return s.version }

// AppendFsync is the server's fsync policy of the append-only file.
func (s *Server) AppendFsync() string { return s.fsync }

// Settings describe the server's persistence settings, for reports.
func (s *Server) Settings() string {
	return fmt.Sprintf(`appendonly yes, appendfsync %s, save ""`, s.fsync)
}

// Source says what the server is and where, for logs.
func (s *Server) Source() string {
	return fmt.Sprintf("throwaway redis-server %s (%s) in %s on %s", s.version, s.bin, s.dir, s.Addr())
}

// Running reports whether the server is up (not stopped, not dead).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// args are the server's command line: everything on it, no config file.
func (s *Server) args() []string {
	return []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--protected-mode", "yes",
		"--daemonize", "no",
		"--dir", filepath.Join(s.dir, "data"),
		"--logfile", filepath.Join(s.dir, "redis.log"),
		"--pidfile", filepath.Join(s.dir, "redis.pid"),
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", s.fsync,
		"--databases", "1",
	}
}

// start launches redis-server and waits until it answers PING.
func (s *Server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("redis server stopped")
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "data"), 0o700); err != nil {
		return fmt.Errorf("create redis data directory: %w", err)
	}
	logPath := filepath.Join(s.dir, "redis.log")
	_ = os.Remove(logPath) // a failed attempt's log
	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.dir
	var early bytes.Buffer // what it prints before it opens its log file
	cmd.Stdout, cmd.Stderr = &early, &early
	cmd.SysProcAttr = procAttr()

	// The parent-death signal fires when the thread that forked the child
	// exits, not the process: fork from a goroutine locked to its thread, which
	// stays alive (waiting for redis-server) as long as the server runs.
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
		return fmt.Errorf("start redis-server: %w", err)
	}
	if err := waitReady(ctx, s.Addr(), exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		logText, _ := os.ReadFile(logPath)
		logText = append(early.Bytes(), logText...)
		if bytes.Contains(logText, []byte("already in use")) {
			return fmt.Errorf("redis-server on port %d: %w", s.port, throwaway.ErrPortInUse)
		}
		return fmt.Errorf("redis-server on port %d: %w\nserver log:\n%s", s.port, err, throwaway.Tail(logText, 4000))
	}
	s.proc, s.exited = cmd.Process, exited
	return nil
}

// waitReady pings addr until the server answers PONG, exited is closed, ctx
// ends or readyTimeout passes.
func waitReady(ctx context.Context, addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := ping(ctx, addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", readyTimeout, err)
		}
		select {
		case <-exited:
			return errors.New("exited before answering PING")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last attempt: %w)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ping sends an inline PING and wants +PONG (a server still loading its
// append-only file answers -LOADING).
func ping(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Stop stops the server (SIGTERM, then SIGKILL) and removes its directory.
// It is idempotent.
func (s *Server) Stop() error {
	s.mu.Lock()
	proc, exited := s.proc, s.exited
	s.proc, s.exited, s.closed = nil, nil, true
	s.mu.Unlock()
	if proc != nil {
		_ = proc.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = proc.Kill()
			<-exited
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("remove redis directory: %w", err)
	}
	return nil
}

// sweepStale removes server directories whose owning process is gone (killed
// before it could clean up), killing a redis-server still running there.
func sweepStale(base string) {
	throwaway.SweepStale(base, dirPrefix, func(dir string) {
		// Only a process working in this directory is the server to kill: the
		// pid may have been reused since.
		if pid, ok := throwaway.PIDFile(filepath.Join(dir, "redis.pid")); ok {
			if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}
