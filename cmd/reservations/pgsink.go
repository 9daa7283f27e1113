package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reservations/reservations/sink"

	"github.com/reservations/reservations/internal/pgdsn"
)

// pgDSNUsage is the description of --pg-dsn where the sink is optional.
const pgDSNUsage = "PostgreSQL connection string (URL or key=value) of the snapshot sink: tables stock and reservations"

// dsnOff disables the sink of dev without probing for a local server.
const dsnOff = "off"

// localDSNs are the local servers dev tries when no DSN is given: Debian's
// default socket as the postgres superuser, then as the OS user (peer
// authentication: works once that user has a role), then the usual TCP port.
var localDSNs = []string{
	"host=/var/run/postgresql user=postgres dbname=postgres",
	"host=/var/run/postgresql dbname=postgres",
	"postgres://postgres@127.0.0.1:5432/postgres",
}

// probeTimeout is how long dev waits for each local server.
const probeTimeout = time.Second

// registerPGSchema adds --pg-schema (RESERVATIONS_PG_SCHEMA), the schema of
// the sink's tables: one meaning in every subcommand that reads or writes them.
// prefix starts the description ("--to postgres: " for replay).
func registerPGSchema(s *settings, p *string, prefix string) {
	s.String(p, "pg-schema", sink.DefaultSchema, prefix+"PostgreSQL schema of the sink's tables (stock, reservations, "+
		"sink_offsets, ...), created when missing; public: where installs before this setting keep them")
}

// checkSchema reports a --pg-schema the sink would refuse as a usage error
// naming the setting; the rule is the sink's (sink.Config.Validate).
func checkSchema(s *settings, name, schema string) error {
	probe := sink.Config{Brokers: []string{"-"}, DSN: "-", Schema: schema}
	if err := probe.Validate(); err != nil {
		return s.Invalid(name, "%s", strings.TrimPrefix(err.Error(), "config: Schema: "))
	}
	return nil
}

// schemaText names a --pg-schema in messages.
func schemaText(schema string) string {
	if schema == "" {
		return "(the connection's search_path)"
	}
	return schema
}

// checkDSN reports a DSN pgx cannot parse as a usage error naming the setting.
func checkDSN(s *settings, name, dsn string) error {
	if _, err := pgxpool.ParseConfig(dsn); err != nil {
		return s.Invalid(name, "not a PostgreSQL connection string (postgres://user:password@host:5432/db or host=... dbname=...)")
	}
	return nil
}

// redactDSN hides the password of a DSN for logs and messages.
func redactDSN(dsn string) string { return pgdsn.Redact(dsn) }

// probePostgres reports whether a server answers at dsn within probeTimeout.
func probePostgres(ctx context.Context, dsn string) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = probeTimeout
	ctx, cancel := context.WithTimeout(ctx, 2*probeTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// devSinkDSN decides the DSN of dev's sink: the one given, none when it is
// "off", else the first local default server that answers. It logs the
// decision in one line. required is true when the DSN was given: then a
// fatal sink error ends dev.
func devSinkDSN(ctx context.Context, log *slog.Logger, s *settings, dsn string) (use string, required bool) {
	switch dsn {
	case dsnOff:
		log.Info("postgres sink off (" + s.Name("pg-dsn") + " is off)")
		return "", false
	case "":
	default:
		log.Info("postgres sink on: writing tables stock and reservations into the database of "+s.Name("pg-dsn"),
			"dsn", redactDSN(dsn))
		return dsn, true
	}
	for _, d := range localDSNs {
		err := probePostgres(ctx, d)
		if err == nil {
			log.Info("postgres sink on: writing tables stock and reservations into a local PostgreSQL server it found ("+
				s.Name("pg-dsn")+" not set; off turns the sink off)", "dsn", redactDSN(d))
			return d, false
		}
		log.Debug("no local postgres", "dsn", d, "err", err)
	}
	log.Info(fmt.Sprintf("postgres sink off: %s not set and no local server at %q or %q; "+
		"set it to a PostgreSQL DSN to keep tables stock and reservations", s.Name("pg-dsn"), localDSNs[0], localDSNs[1]))
	return "", false
}

// sinkRunner runs a sink.Writer as a component of the process.
type sinkRunner struct {
	w *sink.Writer
	// required: a fatal sink error ends the process. Otherwise it is logged
	// and the process continues without the sink.
	required bool
	failed   atomic.Bool
}

func (r *sinkRunner) run(ctx context.Context, log *slog.Logger) error {
	err := r.w.Run(ctx)
	if err == nil {
		return nil
	}
	if r.required {
		return fmt.Errorf("postgres sink: %w", err)
	}
	r.failed.Store(true)
	log.Error("postgres sink stopped for good; the processor keeps running without it", "err", err)
	return nil
}

// status is the sink's part of /readyz: ready, not_ready (Postgres
// unreachable, or not yet migrated), or failed (stopped for good).
func (r *sinkRunner) status() string {
	switch {
	case r.failed.Load():
		return "failed"
	case r.w.Ready():
		return "ready"
	default:
		return "not_ready"
	}
}

// ok is the sink's vote for readiness: an optional sink that failed for good
// no longer holds readiness back.
func (r *sinkRunner) ok() bool { return r.w.Ready() || (!r.required && r.failed.Load()) }
