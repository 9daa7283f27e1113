// Package pgserver starts a throwaway PostgreSQL server for test and
// benchmark harnesses: a postgres:15 container (testcontainers-go) when asked
// for and a Docker engine answers, else a cluster initdb'd into a temporary
// directory from the newest /usr/lib/postgresql/*/bin (or initdb and postgres
// on PATH) and run on a free loopback port.
//
// It needs no testing.TB: internal/pgtest wraps it for tests, internal/bench
// uses it directly.
//
// Invariants: a server started here runs with fsync, synchronous_commit and
// full_page_writes off. Stop removes it (the cluster's directory, or the
// container). When the process dies without Stop, the kernel stops a cluster
// (parent-death signal, Linux) and the next Start of any process removes its
// directory; testcontainers' reaper (Ryuk) removes a container. When the
// process runs as root, the cluster runs as the `postgres` OS user (initdb and
// postgres refuse root).
package pgserver

import (
	"context"
	"fmt"
	"strings"

	"github.com/reservations/reservations/internal/dockerprobe"

	"github.com/reservations/reservations/internal/pgdsn"
)

// Options configure Start.
type Options struct {
	// Docker runs a container when a Docker engine answers
	// (dockerprobe.Engine), before falling back to a local cluster.
	Docker bool
	// MaxConnections is the server's max_connections (default 200).
	MaxConnections int
	// SharedBuffers is the server's shared_buffers (default "128MB").
	SharedBuffers string
}

func (o Options) withDefaults() Options {
	if o.MaxConnections == 0 {
		o.MaxConnections = 200
	}
	if o.SharedBuffers == "" {
		o.SharedBuffers = "128MB"
	}
	return o
}

// settings are the -c settings of both kinds of server; the local cluster
// adds localSettings.
func (o Options) settings() []string {
	return []string{
		"fsync=off",
		"synchronous_commit=off",
		"full_page_writes=off",
		fmt.Sprintf("max_connections=%d", o.MaxConnections),
		"shared_buffers=" + o.SharedBuffers,
	}
}

// localSettings are the -c settings only the local cluster needs: a
// container listens on its own interfaces and logs to its own stream.
var localSettings = []string{
	"listen_addresses=127.0.0.1",
	"log_min_messages=warning",
	"logging_collector=off",
}

// Server is a PostgreSQL server this process started.
type Server struct {
	dsn    string
	source string
	notes  []string
	ctl    control
	dir    string // the local cluster's directory; "" for a container
}

// control runs a server: a local cluster or a container. halt and resume are
// idempotent; close stops and removes it.
type control interface {
	halt(ctx context.Context) error
	resume(ctx context.Context) error
	running() bool
	close() error
}

// Start starts a server: a container when opts.Docker is set and a Docker
// engine answers and the container comes up, else a local cluster.
func Start(ctx context.Context, opts Options) (*Server, error) {
	var notes []string
	if opts.Docker {
		if err := dockerprobe.Engine(); err != nil {
			notes = append(notes, "no Docker engine: "+err.Error())
		} else {
			srv, err := StartContainer(ctx, opts)
			if err == nil {
				return srv, nil
			}
			notes = append(notes, "container "+ContainerImage+": "+err.Error())
		}
	}
	srv, err := StartLocal(ctx, opts)
	if err != nil {
		if len(notes) == 0 {
			return nil, fmt.Errorf("throwaway cluster: %w", err)
		}
		return nil, fmt.Errorf("%s; throwaway cluster: %w", strings.Join(notes, "; "), err)
	}
	srv.notes = notes
	return srv, nil
}

// DSN returns the URL of the server's maintenance database (postgres).
func (s *Server) DSN() string { return s.dsn }

// Source says what the server is and where, for logs (no password).
func (s *Server) Source() string { return s.source }

// Notes say why Start passed over earlier sources (no Docker engine, a
// container that did not come up).
func (s *Server) Notes() []string { return s.notes }

// Dir returns the directory of a local cluster ("" for a container): data/,
// the unix socket, postgres.log.
func (s *Server) Dir() string { return s.dir }

// Halt shuts the server down (fast shutdown: sessions are terminated). The
// data survives; Resume brings the server back on the same port.
func (s *Server) Halt(ctx context.Context) error { return s.ctl.halt(ctx) }

// Resume starts a server stopped by Halt and waits until it accepts
// connections.
func (s *Server) Resume(ctx context.Context) error { return s.ctl.resume(ctx) }

// Running reports whether the server is up (not halted, not stopped).
func (s *Server) Running() bool { return s.ctl.running() }

// Stop stops the server and removes it with its data. It is idempotent.
func (s *Server) Stop() error { return s.ctl.close() }

// RedactDSN hides the password of a DSN for logs and messages (pgdsn.Redact).
func RedactDSN(dsn string) string { return pgdsn.Redact(dsn) }
