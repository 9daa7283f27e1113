package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/sink"
	"github.com/reservations/reservations/topics"
)

// Targets of replay.
const (
	replayBadger   = "badger"
	replayPostgres = "postgres"
)

type replayFlags struct {
	kafkaFlags
	To             string
	StateDir       string
	OnlyPartitions []int32
	Full           bool
	PGDSN          string
	PGSchema       string
	Log            logFlags
}

func replayCommand() *command {
	return &command{
		name:    "replay",
		summary: "rebuild state from the changelog: a processor's Badger folder, or the Postgres snapshot",
		help: `
Rebuilds state from <topic-prefix>.changelog, with progress (percentage,
records/s and the estimated time left, on stderr, at most once a second) and
a summary on stdout (with --to badger, one line per partition: rebuilt in full
and why, or only its tail, or already current; offsets, records, duration).

--to badger --state-dir DIR [--only-partitions 0,3] [--full]
    Brings the processor's local stores under DIR (one Badger folder per
    partition, as 'serve --state-dir' and 'dev' keep them) up to the end of
    the changelog, exactly as a processor restores an assigned partition: a
    valid store replays only the changelog tail after its offset, so an
    interrupted run resumes and a second run changes nothing; an unreadable
    store, or one of another (recreated) topic, is rebuilt in full. --full
    wipes the stores first. Default: every partition. Run it while the
    processor that owns DIR is stopped, e.g. to prepare a new disk.

--to postgres --pg-dsn DSN [--pg-schema SCHEMA]
    Rebuilds the Postgres snapshot (the tables of --pg-schema, as the sink
    keeps them) from scratch: the first run empties stock,
    reservations and the topic's sink_offsets in one transaction that records
    a replay_runs row, then runs the sink until its stored offsets reach the
    changelog end offsets listed at the start, and marks the run finished. An
    interrupted run resumes where it stopped without emptying again; a second
    run rebuilds again, with the same result. A sink running on the same
    database meanwhile notices and follows from the replayed offsets.

Kafka TLS and SASL: the --kafka-* flags, as for serve.

Exit codes: 0 done; 1 failed or interrupted (run it again to resume); 2 usage
error.`,
		setup: func() (*settings, func(context.Context, *cli, []string) int) {
			var cfg replayFlags
			s := newSettings("replay")
			cfg.register(s)
			return s, func(ctx context.Context, c *cli, args []string) int {
				if len(args) > 0 {
					return c.usageFailure("replay", fmt.Errorf("unexpected argument %q", args[0]))
				}
				if err := cfg.validate(s); err != nil {
					return c.usageFailure("replay", err)
				}
				if cfg.To == replayBadger {
					return runReplayBadger(ctx, c, s, cfg)
				}
				return runReplayPostgres(ctx, c, s, cfg)
			}
		},
	}
}

func (cfg *replayFlags) register(s *settings) {
	s.String(&cfg.To, "to", "", "what to rebuild: badger (a processor's state folder) or postgres (the snapshot tables)")
	s.ShowDefault("to", "required")
	cfg.kafkaFlags.register(s)
	s.String(&cfg.StateDir, "state-dir", defaultStateDir, "--to badger: the processor's state folder (one Badger store per partition)")
	s.Var(int32List{&cfg.OnlyPartitions}, "only-partitions", "--to badger: the partitions to rebuild, comma-separated (empty: all)")
	s.ShowDefault("only-partitions", "all")
	s.Bool(&cfg.Full, "full", false, "--to badger: wipe the stores and rebuild them in full, instead of replaying only the tail")
	s.String(&cfg.PGDSN, "pg-dsn", "", "--to postgres: "+pgDSNUsage+" (required with --to postgres)")
	s.Secret("pg-dsn")
	registerPGSchema(s, &cfg.PGSchema, "--to postgres: ")
	cfg.Log.register(s, slog.LevelWarn)
	cfg.Security.register(s)
}

func (cfg *replayFlags) validate(s *settings) error {
	errs := []error{cfg.kafkaFlags.validate(s)}
	// Settings of the other target are an error only as flags: the
	// environment may hold them for other subcommands.
	other := func(name string, set bool) {
		if set && s.Source(name) == fromFlag {
			errs = append(errs, fmt.Errorf("%s applies to --to %s only", s.Name(name), map[string]string{
				replayBadger: replayPostgres, replayPostgres: replayBadger}[cfg.To]))
		}
	}
	switch cfg.To {
	case replayBadger:
		if cfg.StateDir == "" {
			errs = append(errs, s.Invalid("state-dir", "must not be empty"))
		}
		other("pg-dsn", cfg.PGDSN != "")
		other("pg-schema", true)
	case replayPostgres:
		if cfg.PGDSN == "" {
			errs = append(errs, fmt.Errorf("%s is required with --to postgres", s.Name("pg-dsn")))
		} else {
			errs = append(errs, checkDSN(s, "pg-dsn", cfg.PGDSN))
		}
		errs = append(errs, checkSchema(s, "pg-schema", cfg.PGSchema))
		other("only-partitions", len(cfg.OnlyPartitions) > 0)
		other("full", cfg.Full)
		other("state-dir", true)
	case "":
		errs = append(errs, fmt.Errorf("%s is required: badger or postgres", s.Name("to")))
	default:
		errs = append(errs, s.Invalid("to", "%q: want badger or postgres", cfg.To))
	}
	return errors.Join(errs...)
}

func runReplayPostgres(ctx context.Context, c *cli, s *settings, cfg replayFlags) int {
	log := c.logger(cfg.Log)
	if err := cfg.connect(ctx, log, s); err != nil {
		return c.fail("replay", exitFailure, err)
	}
	prog := c.newProgress("replay --to postgres", cfg.Log)
	sum, err := sink.Replay(ctx, sink.ReplayConfig{
		Config:   sink.Config{Brokers: cfg.Brokers, Topic: cfg.changelog(), DSN: cfg.PGDSN, Schema: cfg.PGSchema},
		Progress: prog.update,
	}, sink.WithLogger(log), sink.WithKafkaOpts(cfg.Security.Opts()...))
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted (%w): run it again to resume", err)
		}
		return c.fail("replay", exitFailure, err)
	}
	how := "a new run: the tables were emptied first"
	if sum.Resumed {
		how = "resumed an interrupted run"
	}
	fmt.Fprintf(c.stdout, "replay --to postgres: done, run %d (%s)\n", sum.Run, how)
	fmt.Fprintf(c.stdout, "  changelog %s replayed to its end offsets %s\n", sum.Topic, offsets(sum.End))
	fmt.Fprintf(c.stdout, "  %d changelog offsets (records and transaction markers), %d of them by this run, in %s (%.0f records/s)\n", sum.Total, sum.Replayed,
		sum.Took.Round(time.Millisecond), float64(sum.Replayed)/max(sum.Took.Seconds(), 1e-3))
	fmt.Fprintf(c.stdout, "  tables: stock %d rows, reservations %d rows, in schema %s\n", sum.StockRows, sum.ReservationRows, schemaText(cfg.PGSchema))
	return exitOK
}

func runReplayBadger(ctx context.Context, c *cli, s *settings, cfg replayFlags) int {
	log := c.logger(cfg.Log)
	fail := func(err error) int {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted (%w): run it again to resume", err)
		}
		return c.fail("replay", exitFailure, err)
	}
	if err := cfg.connect(ctx, log, s); err != nil {
		return fail(err)
	}
	proc, err := processor.New(processor.Config{Brokers: cfg.Brokers, Topics: topics.NewNames(cfg.TopicPrefix),
		StateDir: cfg.StateDir, KafkaOpts: cfg.Security.Opts()},
		processor.WithLogger(log.With("component", "replay")))
	if err != nil {
		return fail(err)
	}
	prog := c.newProgress("replay --to badger", cfg.Log)
	sum, err := proc.Rebuild(ctx, processor.RebuildOptions{
		Partitions: cfg.OnlyPartitions,
		Full:       cfg.Full,
		Progress: func(p processor.RebuildProgress) {
			prog.report(p.Done, p.Total, p.ETA, p.ETAKnown)
		},
	})
	var rangeErr *processor.PartitionRangeError
	if errors.As(err, &rangeErr) {
		return c.usageFailure("replay", s.Invalid("only-partitions", "%v", rangeErr))
	}
	if err != nil {
		return fail(err)
	}
	writeRebuildSummary(c.stdout, sum, cfg.StateDir)
	return exitOK
}

// writeRebuildSummary prints what replay --to badger did: the totals, then
// one line per partition.
func writeRebuildSummary(w io.Writer, sum *processor.RebuildSummary, stateDir string) {
	read := sum.Records()
	fmt.Fprintf(w, "replay --to badger: done, partitions %s of %s in %s\n", partitionList(sum.PartitionIDs()), sum.Changelog, stateDir)
	fmt.Fprintf(w, "  %d records read in %s (%.0f records/s); the stores reach the changelog end %s\n",
		read, sum.Took.Round(time.Millisecond), float64(read)/max(sum.Took.Seconds(), 1e-3), offsets(sum.Ends()))
	for _, p := range sum.Partitions {
		how := "tail"
		switch {
		case p.Full:
			how = "full (" + p.FullReason + ")"
		case p.From == p.To:
			how = "current (nothing to replay)"
		}
		fmt.Fprintf(w, "  partition %d: %s, offsets %d..%d, %d records in %s\n",
			p.Partition, how, p.From, p.To, p.Records, p.Took.Round(time.Millisecond))
	}
}

func partitionList(ps []int32) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = topics.PartitionString(p)
	}
	return strings.Join(out, ",")
}

// offsets formats per-partition offsets as "0:12 1:40".
func offsets(m map[int32]int64) string {
	ps := make([]int32, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("%d:%d", p, m[p])
	}
	return strings.Join(out, " ")
}
