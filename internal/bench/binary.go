package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/topics"
)

// SystemBinary is the pipeline as a user runs it: the `reservations` binary
// (go build ./cmd/reservations, `reservations serve`) as its own process,
// against a kfake broker in another process, driven by load-generator
// processes (cmd/loadgen), all on loopback.
const SystemBinary = "binary"

// binaryWorkloads are the workloads of the binary measurement.
var binaryWorkloads = []string{WorkloadUniform, WorkloadHot}

// binaryPrefix is the topic prefix of the binary measurement.
const binaryPrefix = "bench-bin"

// Binary is the measurement of the binary as a user runs it.
type Binary struct {
	// BuildSeconds is how long building the two binaries took (setup).
	BuildSeconds float64 `json:"build_seconds"`
	// Command is the processor's command line (broker address and folders
	// elided).
	Command string `json:"command"`
	// CommitInterval is the processor's default, which the binary runs with.
	CommitInterval time.Duration `json:"commit_interval"`
	Concurrencies  []int         `json:"concurrencies"`
	// Steps are the closed-loop sweeps, the open-loop runs and the paced run.
	Steps []BinaryStep `json:"steps"`
	// CPU per command over every measured step, of the processor process and
	// of the broker process, in microseconds (0: not measured).
	ProcessorCPUUsPerCommand float64 `json:"processor_cpu_us_per_command"`
	BrokerCPUUsPerCommand    float64 `json:"broker_cpu_us_per_command"`
	// ProcessorMaxRSSMB is the processor's peak resident set (getrusage of the
	// child after it stopped).
	ProcessorMaxRSSMB float64 `json:"processor_max_rss_mb"`
	// OpenLoopCPUUsPerCommand is the processor's CPU per command over the
	// open-loop steps only: the cost of a command when the processor is
	// saturated (the closed-loop steps at few clients add the cost of
	// transactions of a handful of commands and of idle polling).
	OpenLoopCPUUsPerCommand float64 `json:"open_loop_processor_cpu_us_per_command"`
	// Passthrough is the same-layout pass-through (its own process, see
	// RunPassthrough) under the binary's uniform open loop: the floor of
	// the processor's Kafka I/O ("processor" CPU is the pass-through's).
	Passthrough *BinaryStep `json:"passthrough,omitempty"`
	// Passthrough16 is the same pass-through at 16 clients, closed loop: the
	// request/reply latency of the transaction loop and the broker alone.
	Passthrough16 *BinaryStep `json:"passthrough_16,omitempty"`
	// PassthroughChangelogPerCommand is the changelog records it writes per command.
	PassthroughChangelogPerCommand int `json:"passthrough_changelog_per_command,omitempty"`
	// PassthroughSized and PassthroughSized16 are the same two steps with
	// records as large as the processor's for a new reserve: a result of
	// PassResultBytes and changelog records of PassChangelogBytes.
	PassthroughSized   *BinaryStep `json:"passthrough_sized,omitempty"`
	PassthroughSized16 *BinaryStep `json:"passthrough_sized_16,omitempty"`
	// PassthroughSizedPaced is the sized pass-through paced at the binary's
	// hot paced rate (half the hot open loop's), with uniform commands (the
	// pass-through answers every command alike): the tail of the Kafka I/O
	// alone at the rate binary_hot_p99_ms_at_half_max is measured at.
	PassthroughSizedPaced *BinaryStep `json:"passthrough_sized_paced,omitempty"`
	PassCommandBytes      int         `json:"pass_command_bytes,omitempty"`
	PassResultBytes       int         `json:"pass_result_bytes,omitempty"`
	PassChangelogBytes    []int       `json:"pass_changelog_bytes,omitempty"`
	// Profile is the CPU profile of the processor process over the whole
	// run (RESERVATIONS_CPU_PROFILE), when the harness has -cpuprofile.
	Profile *ProfileSummary `json:"profile,omitempty"`
	Check   BinaryCheck     `json:"check"`
	// Notes explain figures left out (e.g. a ratio whose baseline was not
	// measured in the run).
	Notes []string `json:"notes,omitempty"`
}

// BinaryStep is one step of the binary measurement with the CPU time of each
// process over its measured window.
type BinaryStep struct {
	Step
	ProcessorCPUSeconds float64 `json:"processor_cpu_seconds"`
	BrokerCPUSeconds    float64 `json:"broker_cpu_seconds"`
	// LoadgenCPUSeconds is the load generator's whole life (connect included).
	LoadgenCPUSeconds float64 `json:"loadgen_cpu_seconds"`
	// ProcessorCPUUsPerCommand is ProcessorCPUSeconds per completed command.
	ProcessorCPUUsPerCommand float64 `json:"processor_cpu_us_per_command"`
}

func newBinaryStep(res LoadResult) BinaryStep {
	bs := BinaryStep{Step: res.Step, ProcessorCPUSeconds: res.CPUSeconds["processor"],
		BrokerCPUSeconds: res.CPUSeconds["broker"], LoadgenCPUSeconds: res.CPUSeconds["loadgen"]}
	if bs.Completed > 0 {
		bs.ProcessorCPUUsPerCommand = 1e6 * bs.ProcessorCPUSeconds / float64(bs.Completed)
	}
	return bs
}

// binaryPhase builds the binaries, starts broker and processor as processes,
// runs the sweeps and the open-loop and paced runs from load-generator
// processes, stops the processor and checks the invariants from the topics.
// A violation fails the run.
func (r *run) binaryPhase(ctx context.Context) error {
	cfg := &r.cfg
	if len(cfg.BinaryConcurrencies) == 0 {
		r.logf("binary: no concurrencies configured (%s mode): skipped", cfg.Mode)
		return nil
	}
	b := &Binary{CommitInterval: processor.DefaultConfig().CommitInterval, Concurrencies: cfg.BinaryConcurrencies}
	r.rep.Binary = b
	env, err := startBinaryEnv(ctx, cfg, r.logf)
	if err != nil {
		return err
	}
	defer env.close()
	b.BuildSeconds, b.Command = env.buildSeconds, env.command

	if _, err := env.load(ctx, LoadConfig{Kind: KindSetup, Tag: r.tag("bs"), Ops: cfg.SKUs, Timeout: 2 * time.Minute}); err != nil {
		return fmt.Errorf("binary: set stock: %w", err)
	}
	add := func(res LoadResult) {
		bs := newBinaryStep(res)
		b.Steps = append(b.Steps, bs)
		r.logBinaryStep(&bs)
	}
	for _, w := range binaryWorkloads {
		warm := LoadConfig{Kind: KindClosed, Workload: w, Clients: min(16, slices.Max(cfg.BinaryConcurrencies)),
			Ops: min(200, cfg.MinOps), Seed: seedOf(w, -1), Tag: r.tag("bw"), Timeout: cfg.StepTimeout}
		if _, err := env.load(ctx, warm); err != nil {
			return fmt.Errorf("binary warm-up %s: %w", w, err)
		}
		for _, c := range cfg.BinaryConcurrencies {
			res, err := env.load(ctx, LoadConfig{Kind: KindClosed, Workload: w, Clients: c, Ops: cfg.stepOps(c),
				Seed: seedOf(w, c), Tag: r.tag("b"), Timeout: cfg.StepTimeout})
			if err != nil {
				return fmt.Errorf("binary %s clients=%d: %w", w, c, err)
			}
			add(res)
		}
	}
	var hotMax float64
	for _, w := range binaryWorkloads {
		res, err := env.load(ctx, LoadConfig{Kind: KindOpen, Workload: w, Ops: cfg.OpenLoopOps, Seed: seedOf(w, 0),
			Tag: r.tag("bo"), Timeout: 2 * time.Minute})
		if err != nil {
			return fmt.Errorf("binary open loop %s: %w", w, err)
		}
		add(res)
		if w == WorkloadHot {
			hotMax = res.Step.Throughput
		}
	}
	// The same-layout pass-through, driven like the uniform open loop: a new
	// reserve writes a result and three changelog records (reservation,
	// idempotency entry, stock entity; the uniform workload's SKUs rarely
	// meet twice in a transaction, so little coalesces).
	// Then at 16 clients, closed loop: the latency floor of request/reply
	// through one transaction loop on this broker (p50_ms_at_16_clients).
	const perCommand = 3
	passLoads := func(tag string) []LoadConfig {
		return []LoadConfig{
			{Kind: KindOpen, Workload: WorkloadUniform, Ops: cfg.OpenLoopOps,
				Seed: seedOf(WorkloadUniform, 0), Tag: r.tag(tag + "p"), Timeout: 2 * time.Minute},
			{Kind: KindClosed, Workload: WorkloadUniform, Clients: 16, Ops: cfg.stepOps(16),
				Seed: seedOf(WorkloadUniform, 16), Tag: r.tag(tag + "q"), Timeout: cfg.StepTimeout},
		}
	}
	pres, err := env.passthroughStep(ctx, PassConfig{TopicPrefix: passPrefix, ChangelogPerCommand: perCommand}, passLoads("b")...)
	if err != nil {
		return fmt.Errorf("binary same-layout pass-through: %w", err)
	}
	pt, pq := newBinaryStep(pres[0]), newBinaryStep(pres[1])
	pt.System, pq.System = SystemPassthrough, SystemPassthrough
	b.Passthrough, b.Passthrough16, b.PassthroughChangelogPerCommand = &pt, &pq, perCommand
	r.logBinaryStep(&pt)
	r.logBinaryStep(&pq)
	// Again with records of the processor's sizes: what the contract's bytes
	// cost the Kafka I/O alone.
	sized := PassConfig{TopicPrefix: passSizedPrefix, ChangelogPerCommand: perCommand}
	var commandBytes int
	commandBytes, sized.ResultBytes, sized.ChangelogBytes = contractSizes()
	sizedLoads := passLoads("s")
	pacedRate := hotMax / 2
	if pacedRate > 0 {
		sizedLoads = append(sizedLoads, LoadConfig{Kind: KindPaced, Workload: WorkloadUniform,
			Ops: max(int(pacedRate*cfg.PacedDuration.Seconds()), 1), Rate: pacedRate, Seed: seedOf(WorkloadUniform, -2),
			Tag: r.tag("sp"), Timeout: cfg.PacedDuration + time.Minute})
	}
	sres, err := env.passthroughStep(ctx, sized, sizedLoads...)
	if err != nil {
		return fmt.Errorf("binary pass-through with the processor's record sizes: %w", err)
	}
	st, sq := newBinaryStep(sres[0]), newBinaryStep(sres[1])
	st.System, sq.System = SystemPassthroughSized, SystemPassthroughSized
	b.PassthroughSized, b.PassthroughSized16 = &st, &sq
	if len(sres) > 2 {
		sp := newBinaryStep(sres[2])
		sp.System = SystemPassthroughSized
		b.PassthroughSizedPaced = &sp
	}
	b.PassCommandBytes, b.PassResultBytes, b.PassChangelogBytes = commandBytes, sized.ResultBytes, sized.ChangelogBytes
	r.logBinaryStep(&st)
	r.logBinaryStep(&sq)
	if sp := b.PassthroughSizedPaced; sp != nil {
		r.logBinaryStep(sp)
	}
	if rate := pacedRate; rate > 0 {
		n := max(int(rate*cfg.PacedDuration.Seconds()), 1)
		res, err := env.load(ctx, LoadConfig{Kind: KindPaced, Workload: WorkloadHot, Ops: n, Rate: rate,
			Seed: seedOf(WorkloadHot, -2), Tag: r.tag("bh"), Timeout: cfg.PacedDuration + time.Minute})
		if err != nil {
			return fmt.Errorf("binary paced hot: %w", err)
		}
		add(res)
	}
	b.ProcessorCPUUsPerCommand, b.BrokerCPUUsPerCommand = cpuPerCommand(b.Steps)
	b.OpenLoopCPUUsPerCommand, _ = cpuPerCommand(slices.DeleteFunc(slices.Clone(b.Steps), func(s BinaryStep) bool { return s.Kind != KindOpen }))

	// The check reads what the stopped processor committed.
	if err := env.stopProcessor(); err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	b.ProcessorMaxRSSMB = env.processorMaxRSSMB()
	if env.profile != "" {
		b.Profile = summarizeProfile(env.profile)
	}
	t0 := time.Now()
	b.Check = checkBinary(ctx, env.brokers, env.names.Changelog, env.names.Results, env.tags)
	c := &b.Check
	r.rep.Oversell = append(r.rep.Oversell, OversellCheck{System: SystemBinary, Scope: "all binary steps (changelog replay)",
		SKUsChecked: c.SKUs, OversoldSKUs: c.OversoldSKUs, MismatchedSKUs: c.MismatchedSKUs, Error: c.Error,
		Detail: fmt.Sprintf("%d command ids, %d decided twice, %d unmatched, %d unknown", c.CommandIDs, c.DecidedTwice, c.Unmatched, c.Unknown)})
	r.logf("binary check (%.1fs): %d command ids, %d results, %d SKUs, %d active; %d violations %s %s", time.Since(t0).Seconds(),
		c.CommandIDs, c.Results, c.SKUs, c.Active, c.Violations(), strings.Join(c.Examples, "; "), c.Error)
	return c.verdict()
}

// cpuPerCommand is the processor's and the broker's CPU microseconds per
// completed command over steps.
func cpuPerCommand(steps []BinaryStep) (proc, broker float64) {
	var p, br float64
	n := 0
	for _, s := range steps {
		p += s.ProcessorCPUSeconds
		br += s.BrokerCPUSeconds
		n += s.Completed
	}
	if n == 0 {
		return 0, 0
	}
	return 1e6 * p / float64(n), 1e6 * br / float64(n)
}

func (r *run) logBinaryStep(s *BinaryStep) {
	extra := ""
	if s.Kind == KindPaced {
		extra = fmt.Sprintf(" at %.0f/s", s.TargetRate)
	}
	extra += s.txnLog()
	if s.Errors > 0 {
		extra += fmt.Sprintf(" errors=%d", s.Errors)
	}
	if s.TimedOut {
		extra += " (step timeout)"
	}
	r.logf("%-18s %-7s %-6s clients=%-5d %6d cmds %8.0f/s p50=%.1fms p99=%.1fms; cpu processor %.2fs (%.0fus/cmd) broker %.2fs loadgen %.2fs%s",
		s.System, s.Workload, s.Kind, s.Clients, s.Completed, s.Throughput, s.P50, s.P99,
		s.ProcessorCPUSeconds, s.ProcessorCPUUsPerCommand, s.BrokerCPUSeconds, s.LoadgenCPUSeconds, extra)
}

// binaryNames are the topics of the binary measurement.
func binaryNames() topics.Names { return topics.NewNames(binaryPrefix) }
