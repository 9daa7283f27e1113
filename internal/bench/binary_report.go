package bench

import (
	"fmt"
	"slices"
)

// finishBinary puts the binary measurement's figures into the headline:
// binary_<workload>_{throughput_at_p99_150ms,p99_ms_at_best,clients_at_best,
// max_throughput,within_budget} like the other systems', the p50 at 16
// clients, the hot p99 at half the open-loop maximum, CPU per command, and
// ratios against best SQL, the in-process pipeline and (when the run
// measured it) Redis. It must run after the other systems' keys are set.
func (rep *Report) finishBinary() {
	b := rep.Binary
	if b == nil || len(b.Steps) == 0 {
		return
	}
	h := rep.Headline
	b.Notes = nil
	steps := make([]Step, len(b.Steps))
	for i := range b.Steps {
		steps[i] = b.Steps[i].Step
	}
	for _, w := range binaryWorkloads {
		best, ok := bestOf(steps, SystemBinary, w)
		if !ok {
			continue
		}
		h[fmt.Sprintf("binary_%s_throughput_at_p99_150ms", w)] = best.Throughput
		h[fmt.Sprintf("binary_%s_p99_ms_at_best", w)] = best.P99
		h[fmt.Sprintf("binary_%s_clients_at_best", w)] = float64(best.Clients)
		h[fmt.Sprintf("binary_%s_max_throughput", w)] = best.MaxThroughput
		h[fmt.Sprintf("binary_%s_within_budget", w)] = b2f(best.WithinBudget)
		for _, base := range []struct{ key, name string }{
			{"best_sql_%s_throughput_at_p99_150ms", "best_sql"},
			{"pipeline_%s_throughput_at_p99_150ms", "pipeline"},
			{"redis_%s_throughput_at_p99_150ms", "redis"},
		} {
			k := fmt.Sprintf(base.key, w)
			if v, ok := h[k]; ok && v > 0 {
				h[fmt.Sprintf("binary_vs_%s_throughput_ratio_%s", base.name, w)] = best.Throughput / v
			} else {
				b.Notes = append(b.Notes, fmt.Sprintf("binary_vs_%s_throughput_ratio_%s left out: %s not measured in this run", base.name, w, k))
			}
		}
	}
	for _, s := range b.Steps {
		switch {
		case s.Kind == KindClosed && s.Workload == WorkloadUniform && s.Clients == 16:
			h["binary_p50_ms_at_16_clients"] = s.P50
			h["binary_p99_ms_at_16_clients"] = s.P99
			if s.Txns > 0 && s.DecideMs > 0 {
				h["binary_16_clients_records_per_txn"] = s.RecordsPerTxn
				h["binary_16_clients_decide_ms"] = s.DecideMs
				h["binary_16_clients_flush_ms"] = s.FlushMs
				h["binary_16_clients_end_ms"] = s.CommitMs
			}
		case s.Kind == KindOpen:
			h["binary_open_loop_"+s.Workload+"_throughput"] = s.Throughput
			if s.Workload == WorkloadUniform && s.Completed > 0 {
				h["binary_processor_cpu_us_per_command_open_loop_uniform"] = s.ProcessorCPUUsPerCommand
			}
		case s.Kind == KindPaced:
			h["binary_hot_p99_ms_at_half_max"] = s.P99
			h["binary_hot_half_max_rate"] = s.TargetRate
			if s.Completed > 0 && s.ProcessorCPUUsPerCommand > 0 {
				h["binary_hot_paced_processor_cpu_us_per_command"] = s.ProcessorCPUUsPerCommand
			}
			if s.Seconds > 0 && s.ProcessorCPUSeconds > 0 {
				// The processor's and the broker's CPU over the step's wall
				// time: how close to the machine's cores the paced rate runs
				// (the load generator's comes on top; its figure covers its
				// whole life, not the step).
				h["binary_hot_paced_cores_busy"] = (s.ProcessorCPUSeconds + s.BrokerCPUSeconds) / s.Seconds
			}
		}
	}
	if !slices.ContainsFunc(b.Steps, func(s BinaryStep) bool { return s.Kind == KindClosed && s.Clients == 16 }) {
		b.Notes = append(b.Notes, "binary_p50_ms_at_16_clients left out: 16 clients is not in the sweep")
	}
	if b.ProcessorCPUUsPerCommand > 0 {
		h["binary_processor_cpu_us_per_command"] = b.ProcessorCPUUsPerCommand
		h["binary_broker_cpu_us_per_command"] = b.BrokerCPUUsPerCommand
	}
	if pt := b.Passthrough; pt != nil && pt.Throughput > 0 {
		h["passthrough_same_layout_throughput"] = pt.Throughput
		h["passthrough_same_layout_cpu_us_per_command"] = pt.ProcessorCPUUsPerCommand
		if v := h["binary_open_loop_uniform_throughput"]; v > 0 {
			h["e2e_vs_passthrough_same_layout_ratio"] = v / pt.Throughput
		}
	}
	if pq := b.Passthrough16; pq != nil && pq.Completed > 0 {
		h["passthrough_same_layout_p50_ms_at_16_clients"] = pq.P50
	}
	if ps := b.PassthroughSized; ps != nil && ps.Throughput > 0 {
		h["passthrough_sized_throughput"] = ps.Throughput
		h["passthrough_sized_cpu_us_per_command"] = ps.ProcessorCPUUsPerCommand
		h["passthrough_sized_broker_cpu_us_per_command"] = 1e6 * ps.BrokerCPUSeconds / float64(max(ps.Completed, 1))
		bytes := b.PassResultBytes
		for _, n := range b.PassChangelogBytes {
			bytes += n
		}
		h["passthrough_sized_bytes_per_command"] = float64(bytes)
	}
	if ps := b.PassthroughSized16; ps != nil && ps.Completed > 0 {
		h["passthrough_sized_p50_ms_at_16_clients"] = ps.P50
		if ps.Txns > 0 && ps.DecideMs > 0 {
			h["passthrough_sized_16_clients_records_per_txn"] = ps.RecordsPerTxn
			h["passthrough_sized_16_clients_copy_ms"] = ps.DecideMs
			h["passthrough_sized_16_clients_flush_ms"] = ps.FlushMs
			h["passthrough_sized_16_clients_end_ms"] = ps.CommitMs
		}
	}
	if ps := b.PassthroughSizedPaced; ps != nil && ps.Completed > 0 {
		h["passthrough_sized_paced_p99_ms"] = ps.P99
		h["passthrough_sized_paced_rate"] = ps.TargetRate
		if ps.ProcessorCPUUsPerCommand > 0 {
			h["passthrough_sized_paced_cpu_us_per_command"] = ps.ProcessorCPUUsPerCommand
		}
	}
	if b.OpenLoopCPUUsPerCommand > 0 {
		h["binary_processor_cpu_us_per_command_open_loop"] = b.OpenLoopCPUUsPerCommand
	}
	if b.ProcessorMaxRSSMB > 0 {
		h["binary_processor_max_rss_mb"] = b.ProcessorMaxRSSMB
	}
	h["binary_commit_interval_ms"] = float64(b.CommitInterval.Milliseconds())
	h["binary_violations"] = float64(b.Check.Violations())
	h["binary_check_failed"] = b2f(b.Check.verdict() != nil && b.Check.Violations() == 0)
}

// binaryRatioKeys are the ratio keys the report quotes (present ones only).
func binaryRatioKeys() []string {
	var ks []string
	for _, base := range []string{"pipeline", "best_sql", "redis"} {
		for _, w := range binaryWorkloads {
			ks = append(ks, fmt.Sprintf("binary_vs_%s_throughput_ratio_%s", base, w))
		}
	}
	return ks
}
