// Package throwaway holds what the throwaway servers of the tests and the
// benchmark (internal/pgserver, internal/redisserver) share: the owner file
// of a server's directory, the sweep of directories a killed process left
// behind, a free loopback port.
package throwaway

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// WriteOwner writes this process's pid to dir/owner.pid, whole or not at all
// (rename), so that a parallel SweepStale never reads a half-written owner.
func WriteOwner(dir string) error {
	tmp := filepath.Join(dir, "owner.pid.tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("write owner file: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "owner.pid")); err != nil {
		return fmt.Errorf("write owner file: %w", err)
	}
	return nil
}

// SweepStale removes the directories base/prefix* whose owning process is
// gone (killed before it could clean up), calling stopServer(dir) first to
// stop a server still running there. A directory without a readable owner
// is being created right now, or is not ours: it is left alone unless it is
// older than an hour (treating a half-written owner file as stale once
// removed a parallel process's brand-new directory).
func SweepStale(base, prefix string, stopServer func(dir string)) {
	dirs, _ := filepath.Glob(filepath.Join(base, prefix+"*"))
	for _, dir := range dirs {
		owner, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		pid, perr := strconv.Atoi(strings.TrimSpace(string(owner)))
		if err != nil || perr != nil {
			if fi, err := os.Stat(dir); err != nil || time.Since(fi.ModTime()) < time.Hour {
				continue
			}
		} else if Alive(pid) {
			continue
		}
		stopServer(dir)
		_ = os.RemoveAll(dir)
	}
}

// PIDFile returns the pid in a server's pid file (its first line), if that
// process is alive.
func PIDFile(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || !Alive(pid) {
		return 0, false
	}
	return pid, true
}

// Alive reports whether a process with the given pid exists.
func Alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ErrPortInUse is what a server's start returns (wrapped) when another
// process took its port first.
var ErrPortInUse = errors.New("port in use")

// StartOnFreePort calls start with a free loopback port, and again with
// another one (up to five) while start fails with ErrPortInUse: a port that
// was free a moment ago may be taken by a parallel process before the server
// binds it.
func StartOnFreePort(start func(port int) error) error {
	for attempt := 0; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return err
		}
		err = start(port)
		if err == nil || !errors.Is(err, ErrPortInUse) || attempt == 4 {
			return err
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Tail returns the last n bytes of b (a server log in an error message).
func Tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
