package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reservations/reservations/internal/pgserver"
)

// postgres is the server the SQL baselines and the sink run against: the one
// named by a DSN, or a throwaway cluster the harness started.
type postgres struct {
	dsn      string
	version  string
	settings string
	local    *pgserver.Server
}

// localOptions are the throwaway cluster's. Durability is off on both sides
// of the comparison: kfake keeps its log in memory, and the cluster runs
// without fsync and synchronous commit, which can only flatter the SQL
// baselines. No container even where Docker answers: the baselines run on
// the same kind of server every time.
var localOptions = pgserver.Options{MaxConnections: 300, SharedBuffers: "256MB"}

// openPostgres connects to dsn, or starts a throwaway cluster when dsn is empty.
func openPostgres(ctx context.Context, dsn string, out io.Writer) (*postgres, error) {
	pg := &postgres{dsn: dsn}
	if dsn == "" {
		l, err := pgserver.StartLocal(ctx, localOptions)
		if err != nil {
			return nil, fmt.Errorf("start a throwaway PostgreSQL (or pass a DSN): %w", err)
		}
		pg.local, pg.dsn = l, l.DSN()
		fmt.Fprintf(out, "postgres: %s (fsync=off, synchronous_commit=off, full_page_writes=off)\n", l.Source())
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

// close stops and removes the throwaway cluster, if the harness started one.
func (pg *postgres) close() {
	if pg.local != nil {
		_ = pg.local.Stop() // nothing left to measure; a leftover directory is swept by the next start
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
