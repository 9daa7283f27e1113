// Package pgtest gives tests a fresh database on a real PostgreSQL server.
//
// Each call of New or NewDatabase creates a new, empty database (dropped again
// when the test ends), so tests never see each other's rows and may run in
// parallel. The databases live on one server per test process, found in this
// order:
//
//  1. the server named by the DSN in RESERVATIONS_TEST_PG_DSN (its user needs
//     CREATEDB);
//  2. otherwise, when a Docker engine answers (internal/dockerprobe: a
//     DOCKER_HOST or Docker socket and a ping within two seconds, asked once
//     per process; RESERVATIONS_TEST_DOCKER=0 turns it off), a postgres:15
//     container run with testcontainers-go;
//  3. otherwise, or when the container cannot be started, a throwaway cluster
//     started from the newest /usr/lib/postgresql/*/bin (or initdb/postgres on
//     PATH): initdb into a temporary directory, postgres on a free loopback
//     port. When the test process runs as root, the cluster runs as the
//     `postgres` OS user.
//
// Steps 2 and 3 are internal/pgserver; this package is the testing.TB wrapper
// around it. Servers the harness starts run with fsync, synchronous_commit
// and full_page_writes off. If no server can be had the test fails (it never
// skips) with a message saying how to get PostgreSQL.
//
// Invariants: a server the harness starts is stopped when the test process
// ends, whatever way it ends. Call Main from TestMain to stop it (and remove
// the cluster's directory, or the container) as soon as the tests are done.
// Without that, or when the process is killed, the kernel stops a throwaway
// cluster (parent-death signal) and the next run removes its directory, and
// testcontainers' reaper (Ryuk) removes a container. Every test process starts
// its own server on its own port, so `go test ./...` may run packages in
// parallel.
//
// Tests that stop and start PostgreSQL under a running component use NewServer,
// a private server with Stop and Start (a container's host port is pinned so
// that it survives the restart), so other tests of the package keep their
// server.
package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reservations/reservations/internal/pgserver"
)

// EnvDSN names the environment variable holding the DSN of an existing server.
const EnvDSN = "RESERVATIONS_TEST_PG_DSN"

// howToGet is appended to every "no server" failure.
func howToGet() string {
	return "install PostgreSQL server binaries (`apt-get install -y postgresql`), " +
		"start a Docker engine (the harness then runs " + pgserver.ContainerImage + " with testcontainers), " +
		"or set " + EnvDSN + " to the DSN of a server whose user may CREATE DATABASE " +
		"(e.g. `docker run -d -p 127.0.0.1:5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15` and " +
		EnvDSN + "=postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)"
}

// Server is a PostgreSQL server on which tests create databases.
type Server struct {
	dsn    string           // DSN of the maintenance database
	source string           // where the server comes from, for logs and messages
	pg     *pgserver.Server // nil for a server named by EnvDSN
}

// Database is a database created for one test.
type Database struct {
	// Name is the database name.
	Name string
	// DSN connects to the database (URL or keyword/value form, as the server's).
	DSN string
	// Pool is connected to the database; it is closed when the test ends.
	Pool *pgxpool.Pool
	// Server is the server the database lives on.
	Server *Server
}

var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// New returns a pool connected to a fresh database on the shared server. The
// pool is closed and the database dropped when t ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return NewDatabase(t).Pool
}

// NewDatabase is New with the database's name and DSN, for code under test
// that connects by itself.
func NewDatabase(t testing.TB) *Database {
	t.Helper()
	return Shared(t).NewDatabase(t)
}

// Shared returns the server shared by all tests of the process, starting it on
// first use.
func Shared(t testing.TB) *Server {
	t.Helper()
	first := false
	shared.once.Do(func() {
		first = true
		if dsn := os.Getenv(EnvDSN); dsn != "" {
			shared.srv, shared.err = openDSN(dsn)
			if shared.err != nil {
				shared.err = fmt.Errorf("%s=%q: %w", EnvDSN, pgserver.RedactDSN(dsn), shared.err)
			}
			return
		}
		shared.srv, shared.err = start()
	})
	if shared.err != nil {
		t.Fatalf("pgtest: no PostgreSQL server: %v\n%s", shared.err, howToGet())
	}
	if first {
		shared.srv.log(t)
	}
	return shared.srv
}

// NewServer starts a private server for t, stopped and removed when t ends:
// a container when a Docker engine answers, else a throwaway cluster. Use it
// for tests that Stop and Start the server. It ignores RESERVATIONS_TEST_PG_DSN,
// because a server named by a DSN cannot be restarted from here.
func NewServer(t testing.TB) *Server {
	t.Helper()
	srv, err := start()
	if err != nil {
		t.Fatalf("pgtest: start a private PostgreSQL server: %v\n%s", err, howToGet())
	}
	t.Cleanup(func() {
		if err := srv.pg.Stop(); err != nil {
			t.Logf("pgtest: remove private server: %v", err)
		}
	})
	srv.log(t)
	return srv
}

// start starts a server this process runs: a container when a Docker engine
// answers and the container comes up, else a throwaway cluster.
func start() (*Server, error) {
	pg, err := pgserver.Start(context.Background(), pgserver.Options{Docker: true})
	if err != nil {
		return nil, err
	}
	return wrap(pg), nil
}

// wrap makes a server this process started one on which tests create databases.
func wrap(pg *pgserver.Server) *Server {
	return &Server{dsn: pg.DSN(), source: pg.Source(), pg: pg}
}

// log says in t's log which server t got and why earlier sources were passed
// over.
func (s *Server) log(t testing.TB) {
	t.Helper()
	t.Logf("pgtest: PostgreSQL server: %s", s.source)
	if s.pg == nil {
		return
	}
	for _, n := range s.pg.Notes() {
		t.Logf("pgtest: passed over: %s", n)
	}
}

// Main runs the tests and then stops the shared server, if one was started.
// Call it from TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// StopShared stops the shared server and removes its directory if this process
// started it. It is for TestMain functions that cannot use Main.
func StopShared() {
	if shared.srv != nil && shared.srv.pg != nil {
		_ = shared.srv.pg.Stop() // the process is ending: nothing to report to
	}
}

// DSN returns the DSN of the server's maintenance database.
func (s *Server) DSN() string { return s.dsn }

// CanRestart reports whether Stop and Start work on s (a server this process
// started: a throwaway cluster or a container).
func (s *Server) CanRestart() bool { return s.pg != nil }

// Stop shuts the server down (fast shutdown: sessions are terminated). The
// databases survive; Start brings the server back on the same port.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if s.pg == nil {
		t.Fatalf("pgtest: the server named by %s cannot be stopped from a test; use pgtest.NewServer", EnvDSN)
	}
	if err := s.pg.Halt(context.Background()); err != nil {
		t.Fatalf("pgtest: stop server: %v", err)
	}
}

// Start starts a server stopped by Stop and waits until it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if s.pg == nil {
		t.Fatalf("pgtest: the server named by %s cannot be started from a test; use pgtest.NewServer", EnvDSN)
	}
	if err := s.pg.Resume(context.Background()); err != nil {
		t.Fatalf("pgtest: start server: %v", err)
	}
}

// NewDatabase creates a fresh database on s for t; the database is dropped and
// its pool closed when t ends.
func (s *Server) NewDatabase(t testing.TB) *Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	name := databaseName(t.Name())
	if err := s.admin(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	dsn, err := withDatabase(s.dsn, name)
	if err != nil {
		t.Fatalf("pgtest: database DSN: %v", err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatalf("pgtest: connect to database %s: %v", name, err)
	}
	t.Cleanup(func() {
		pool.Close()
		if s.pg != nil && !s.pg.Running() {
			return // a stopped server of ours: its data goes away with it
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.admin(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	return &Database{Name: name, DSN: dsn, Pool: pool, Server: s}
}

// admin runs one statement on the maintenance database.
func (s *Server) admin(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// openDSN checks that dsn reaches a server on which databases can be created.
func openDSN(dsn string) (*Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	var ok bool
	err = conn.QueryRow(ctx, `SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&ok)
	if err != nil {
		return nil, fmt.Errorf("check CREATEDB privilege: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("user may not create databases (needs CREATEDB)")
	}
	return &Server{dsn: dsn, source: EnvDSN + "=" + pgserver.RedactDSN(dsn)}, nil
}

// databaseName makes a unique, valid, unquoted identifier from a test name.
func databaseName(test string) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(test) {
		if b.Len() >= 40 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	fmt.Fprintf(&b, "_%016x", rand.Uint64())
	return b.String()
}

// withDatabase returns dsn with its database replaced by db.
func withDatabase(dsn, db string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse DSN URL: %w", err)
		}
		u.Path = "/" + db
		u.RawPath = ""
		return u.String(), nil
	}
	// Keyword/value form: a later keyword overrides an earlier one.
	return strings.TrimSpace(dsn) + " dbname=" + db, nil
}
