package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/reservations/reservations/sink"
	"github.com/reservations/reservations/topics"
)

type verifyFlags struct {
	kafkaFlags
	PGDSN     string
	PGSchema  string
	Wait      time.Duration
	MaxReport int
	Audit     string
	Log       logFlags
}

func verifyCommand() *command {
	return &command{
		name:    "verify",
		summary: "check the changelog's invariants and that Postgres equals the changelog",
		help: `
Reads <topic-prefix>.changelog to its end (read_committed), builds the latest
state and checks:

  - per SKU, reserved == the sum of the quantities of its active reservations
    (the phantom-reservation reconciliation), at a transaction boundary;
  - available == on_hand - reserved, on_hand >= 0, reserved >= 0;
  - available < 0 only through stock.set / stock.adjust (stock_set,
    stock_adjusted records): going below 0, or further below, through any
    other event is a violation (judged on consecutive versions);
  - versions strictly increase per entity (compaction may leave gaps);
  - a released, expired or consumed reservation never changes status,
    quantity or order_id again; statuses are known, quantities >= 1;
  - every stock and reservation record decodes and matches its key;
  - with --pg-dsn: the tables stock and reservations equal the latest
    changelog entities (every live entity has its row with equal fields, no
    row for a tombstoned or unknown key), compared at the offsets the sink
    stored. Verify first waits up to --wait for the sink to reach the
    changelog end.
  - with --pg-dsn: the sink's audit trail (table audit_events) holds every
    record of <topic-prefix>.results and <topic-prefix>.cart-results
    exactly once, field for field, and no other row, from each partition's
    log start to the offset the sink stored (rows the topics no longer
    hold, rows read from an earlier topic of the same name, i.e. another
    Kafka topic ID, and records of months the audit retention dropped, are
    not compared). --check-audit auto (the default) compares the topics the sink
    stored offsets of and reports the others as not kept; on requires the
    audit (waiting up to --wait for it); off skips it.

Prints a report (records read, SKUs, reservations by status, the first
--max-report mismatches with key and field) on stdout.

Kafka TLS and SASL: the --kafka-* flags, as for serve.

Exit codes: 0 clean; 1 a mismatch or violation; 2 usage error; 3 no verdict
(Kafka or Postgres unreachable or refusing the credentials, no changelog
topic, the sink still behind the changelog end after --wait).`,
		setup: func() (*settings, func(context.Context, *cli, []string) int) {
			var cfg verifyFlags
			s := newSettings("verify")
			cfg.register(s)
			return s, func(ctx context.Context, c *cli, args []string) int {
				if len(args) > 0 {
					return c.usageFailure("verify", fmt.Errorf("unexpected argument %q", args[0]))
				}
				if err := cfg.validate(s); err != nil {
					return c.usageFailure("verify", err)
				}
				return runVerify(ctx, c, s, cfg)
			}
		},
	}
}

func (cfg *verifyFlags) register(s *settings) {
	cfg.kafkaFlags.register(s)
	s.String(&cfg.PGDSN, "pg-dsn", "", pgDSNUsage+", compared with the changelog (empty: only the changelog is checked)")
	s.Secret("pg-dsn")
	registerPGSchema(s, &cfg.PGSchema, "")
	s.Duration(&cfg.Wait, "wait", 30*time.Second, "how long to wait for the sink's stored offsets to reach the changelog end (0: do not wait)")
	s.Int(&cfg.MaxReport, "max-report", sink.DefaultMaxReport, "how many mismatches the report lists (all are counted)")
	s.String(&cfg.Audit, "check-audit", auditAuto, "with --pg-dsn, compare the sink's audit trail with the results topics: "+
		"auto (where the sink keeps it), on (required), off")
	cfg.Log.register(s, slog.LevelWarn)
	cfg.Security.register(s)
}

func (cfg *verifyFlags) validate(s *settings) error {
	errs := []error{cfg.kafkaFlags.validate(s)}
	if cfg.PGDSN != "" {
		errs = append(errs, checkDSN(s, "pg-dsn", cfg.PGDSN))
	}
	errs = append(errs, checkSchema(s, "pg-schema", cfg.PGSchema))
	if cfg.Wait < 0 {
		errs = append(errs, s.Invalid("wait", "%s: must be >= 0", cfg.Wait))
	}
	if !slices.Contains([]string{auditAuto, auditOn, auditOff}, cfg.Audit) {
		errs = append(errs, s.Invalid("check-audit", "%q: want auto, on or off", cfg.Audit))
	}
	if cfg.MaxReport < 1 {
		errs = append(errs, s.Invalid("max-report", "%d: must be >= 1", cfg.MaxReport))
	}
	return errors.Join(errs...)
}

func runVerify(ctx context.Context, c *cli, s *settings, cfg verifyFlags) int {
	log := c.logger(cfg.Log)
	if err := cfg.connect(ctx, log, s); err != nil {
		return c.fail("verify", exitIncomplete, fmt.Errorf("no verdict: %w", err))
	}
	prog := c.newProgress("verify: reading the changelog", cfg.Log)
	rep, err := sink.Verify(ctx, sink.VerifyConfig{
		Brokers: cfg.Brokers, Topic: cfg.changelog(), DSN: cfg.PGDSN, Schema: cfg.PGSchema, Wait: cfg.Wait, MaxReport: cfg.MaxReport,
		Progress: prog.update, Audit: cfg.auditConfig(), AuditRequired: cfg.Audit == auditOn,
	}, sink.WithLogger(log), sink.WithKafkaOpts(cfg.Security.Opts()...))
	if err != nil {
		return c.fail("verify", exitIncomplete, fmt.Errorf("no verdict: %w", err))
	}
	rep.WriteText(c.stdout)
	if !rep.OK() {
		return exitFailure
	}
	return exitOK
}

// Values of verify --audit.
const (
	auditAuto = "auto"
	auditOn   = "on"
	auditOff  = "off"
)

// auditConfig names the results topics whose audit trail is compared.
func (cfg *verifyFlags) auditConfig() sink.AuditConfig {
	if cfg.Audit == auditOff || cfg.PGDSN == "" {
		return sink.AuditConfig{}
	}
	names := topics.NewNames(cfg.TopicPrefix)
	return sink.AuditConfig{Results: names.Results, CartResults: names.CartResults}
}
