package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/sink"
	"github.com/reservations/reservations/statestore"
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
	Log            logFlags
}

func replayCommand() *command {
	return &command{
		name:    "replay",
		summary: "rebuild state from the changelog: a processor's Badger folder, or the Postgres snapshot",
		help: `
Rebuilds state from <topic-prefix>.changelog, with progress (percentage and
records/s, on stderr, at most once a second) and a summary on stdout.

--to badger --state-dir DIR [--only-partitions 0,3] [--full]
    Brings the processor's local stores under DIR (one Badger folder per
    partition, as 'serve --state-dir' and 'dev' keep them) up to the end of
    the changelog, exactly as a processor restores an assigned partition: a
    valid store replays only the changelog tail after its offset, so an
    interrupted run resumes and a second run changes nothing; an unreadable
    store, or one of another (recreated) topic, is rebuilt in full. --full
    wipes the stores first. Default: every partition. Run it while the
    processor that owns DIR is stopped, e.g. to prepare a new disk.

--to postgres --pg-dsn DSN
    Rebuilds the Postgres snapshot from scratch: the first run empties stock,
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
	s.String(&cfg.StateDir, "state-dir", "./data/state", "--to badger: the processor's state folder (one Badger store per partition)")
	s.Var(int32List{&cfg.OnlyPartitions}, "only-partitions", "--to badger: the partitions to rebuild, comma-separated (empty: all)")
	s.ShowDefault("only-partitions", "all")
	s.Bool(&cfg.Full, "full", false, "--to badger: wipe the stores and rebuild them in full, instead of replaying only the tail")
	s.String(&cfg.PGDSN, "pg-dsn", "", "--to postgres: "+pgDSNUsage+" (required with --to postgres)")
	s.Secret("pg-dsn")
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
	case replayPostgres:
		if cfg.PGDSN == "" {
			errs = append(errs, fmt.Errorf("%s is required with --to postgres", s.Name("pg-dsn")))
		} else {
			errs = append(errs, checkDSN(s, "pg-dsn", cfg.PGDSN))
		}
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
		Config:   sink.Config{Brokers: cfg.Brokers, Topic: cfg.changelog(), DSN: cfg.PGDSN},
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
	fmt.Fprintf(c.stdout, "  tables: stock %d rows, reservations %d rows\n", sum.StockRows, sum.ReservationRows)
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
	names := topics.NewNames(cfg.TopicPrefix)
	reg := prometheus.NewRegistry()
	proc, err := processor.New(processor.Config{Brokers: cfg.Brokers, Topics: names, StateDir: cfg.StateDir,
		KafkaOpts: cfg.Security.Opts()},
		processor.WithLogger(log.With("component", "replay")), processor.WithRegisterer(reg))
	if err != nil {
		return fail(err)
	}
	parts, start, end, err := changelogOffsets(ctx, cfg.Brokers, cfg.Security.Opts(), names.Changelog)
	if err != nil {
		return fail(err)
	}
	if len(cfg.OnlyPartitions) > 0 {
		for _, p := range cfg.OnlyPartitions {
			if !slices.Contains(parts, p) {
				return c.usageFailure("replay", s.Invalid("only-partitions", "partition %d: %s has partitions 0..%d",
					p, names.Changelog, len(parts)-1))
			}
		}
		parts = slices.Compact(slices.Sorted(slices.Values(cfg.OnlyPartitions)))
	}

	// Where each store starts: its offset when it is valid and not wiped,
	// else the log start. Only for the progress figures: Rebuild decides.
	from := map[int32]int64{}
	var total int64
	for _, p := range parts {
		from[p] = start[p]
		if !cfg.Full {
			if off, ok := storeOffset(processor.StateDir(cfg.StateDir, names.Changelog, p)); ok && off >= start[p] && off <= end[p] {
				from[p] = off
			}
		}
		total += end[p] - from[p]
	}

	prog := c.newProgress("replay --to badger", cfg.Log)
	started := time.Now()
	var covered int64
	for _, p := range parts {
		stop := watchRestore(reg, p, end[p], func(pos int64) {
			prog.update(covered+min(max(pos-from[p], 0), end[p]-from[p]), total)
		})
		_, err := proc.Rebuild(ctx, []int32{p}, cfg.Full)
		stop()
		if err != nil {
			return fail(err)
		}
		covered += end[p] - from[p]
		prog.update(covered, total)
	}
	took := time.Since(started)
	read := counterSum(reg, "reservations_restored_records_total")
	fmt.Fprintf(c.stdout, "replay --to badger: done, partitions %s of %s in %s\n", partitionList(parts), names.Changelog, cfg.StateDir)
	fmt.Fprintf(c.stdout, "  %d records read in %s (%.0f records/s); the stores reach the changelog end %s\n",
		read, took.Round(time.Millisecond), float64(read)/max(took.Seconds(), 1e-3), offsets(pick(end, parts)))
	return exitOK
}

// changelogOffsets lists the partitions of topic with their start and end
// offsets. opts are extra client options (TLS, SASL).
func changelogOffsets(ctx context.Context, brokers []string, opts []kgo.Opt, topic string) ([]int32, map[int32]int64, map[int32]int64, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	var parts []int32
	start, end := map[int32]int64{}, map[int32]int64{}
	starts.Each(func(o kadm.ListedOffset) { start[o.Partition] = o.Offset; parts = append(parts, o.Partition) })
	ends.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
	if len(parts) == 0 {
		return nil, nil, nil, fmt.Errorf("topic %s does not exist", topic)
	}
	slices.Sort(parts)
	return parts, start, end, nil
}

// storeOffset reads the changelog offset a partition's store reflects, if
// the store exists and opens.
func storeOffset(dir string) (int64, bool) {
	if _, err := os.Stat(dir); err != nil {
		return 0, false
	}
	st, err := statestore.Open(dir, statestore.Options{})
	if err != nil {
		return 0, false
	}
	defer st.Close()
	off, err := st.Offset()
	return off, err == nil
}

// watchRestore calls fn with the restore position of partition p (the next
// changelog offset to read) every 200ms, until stop is called. The position
// comes from the processor's restore_remaining_records gauge (end - 1 - the
// offset last read) and end, the partition's end offset.
func watchRestore(g prometheus.Gatherer, p int32, end int64, fn func(pos int64)) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if remaining, ok := gaugeValue(g, "reservations_restore_remaining_records", "partition", topics.PartitionString(p)); ok {
				fn(end - int64(remaining))
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

func gaugeValue(g prometheus.Gatherer, name, label, value string) (float64, bool) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, false
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func counterSum(g prometheus.Gatherer, name string) int64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return int64(sum)
}

func pick(m map[int32]int64, keys []int32) map[int32]int64 {
	out := make(map[int32]int64, len(keys))
	for _, k := range keys {
		out[k] = m[k]
	}
	return out
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
