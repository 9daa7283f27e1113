package processor

import (
	"errors"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/reservations/reservations/schemas"
)

// metrics of the processor, namespace "reservations", with a constant label
// role ("sku" or "cart"): both roles publish the same names, so one panel or
// alert covers both. Labels are bounded: role, partition, type (the
// contract's types, else "other"), outcome, reason.
type metrics struct {
	processed        *prometheus.CounterVec
	duplicates       prometheus.Counter
	notices          *prometheus.CounterVec
	dlq              prometheus.Counter
	poison           prometheus.Counter
	forwarded        prometheus.Counter
	expired          prometheus.Counter
	tombstoned       prometheus.Counter
	coalesced        prometheus.Counter
	cacheBytes       prometheus.Gauge
	storeReads       prometheus.Counter
	decideSeconds    prometheus.Histogram
	flushSeconds     prometheus.Histogram
	commitSeconds    prometheus.Histogram
	aborts           prometheus.Counter
	batchRecords     prometheus.Histogram
	restoreSeconds   *prometheus.GaugeVec
	restoreDuration  *prometheus.HistogramVec
	restoreRemaining *prometheus.GaugeVec
	restored         *prometheus.CounterVec
	storeWipes       prometheus.Counter
	restarts         prometheus.Counter
	processLatency   prometheus.Histogram
	e2eLatency       prometheus.Histogram
	lag              *prometheus.GaugeVec
	active           *prometheus.GaugeVec
	backlog          *prometheus.GaugeVec
	expiryLag        prometheus.Histogram
	oversold         *prometheus.GaugeVec
	// rolePartition are the role's own per-partition gauges (forgotten with
	// the partition).
	rolePartition []*prometheus.GaugeVec
	// Standby replicas: copies running, records they applied, and each
	// copy's lag behind the changelog's last stable offset.
	standbys       prometheus.Gauge
	standbyRecords prometheus.Counter
	standbyLag     *prometheus.GaugeVec
	// running is reservations_partitions_running{role}: shared by both roles
	// of one process (one registry), each setting its own label.
	running prometheus.Gauge
}

// registerShared registers c on reg, or returns the collector already
// registered under the same description (the other role of the same process).
func registerShared[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// newMetrics registers the metrics of a processor of role r on reg, labelled
// role=r.name(), so that both roles share one registry (one binary, one
// /metrics) and the same names; the role's own metrics (r.register) keep
// their own names.
func newMetrics(reg prometheus.Registerer, r role) *metrics {
	const ns = "reservations"
	m := &metrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "commands_processed_total",
			Help: "Commands decided (duplicates excluded), by type, outcome and reason."}, []string{"type", "outcome", "reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "duplicates_total",
			Help: "Re-sent command ids answered with their original result."}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "notices_total",
			Help: "Expired and low_stock notices emitted."}, []string{"type"}),
		dlq: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "dlq_records_total",
			Help: "Undecodable command records copied to the DLQ."}),
		poison: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "poison_commands_total",
			Help: "Commands dead-lettered because the records of their decision were rejected by the broker (too large, invalid)."}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "forwarded_total",
			Help: "Misrouted commands forwarded to the partition their key hashes to."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "expiry_timer_fired_total",
			Help: "Expiry timers fired (a fired timer of a reservation no longer active emits nothing)."}),
		tombstoned: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "tombstones_total",
			Help: "Entities past the dedupe window tombstoned in the changelog."}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "changelog_coalesced_total",
			Help: "Entity changes not written to the changelog because a later change of the same key in the same transaction replaced them."}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "state_cache_bytes",
			Help: "Estimated heap held by the running partitions' caches of committed entities (bounded by --state-cache-mb)."}),
		storeReads: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "state_store_reads_total",
			Help: "Reads of a partition's Badger store while deciding: keys found neither in the open transaction, the cache " +
				"nor the writes waiting for the store, and not known to be absent."}),
		decideSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "transaction_decide_seconds",
			Help: "Time a transaction spends deciding: from its begin until every partition has decided its records and produced " +
				"the results and changelog records, with the polls for more buffered records in between (then flush, then commit).", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "transaction_flush_seconds",
			Help: "Time from the last decision of a transaction until the broker acknowledged every record it produced.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "transaction_commit_seconds",
			Help: "Time to end a transaction: its offset commit, the heartbeat the transactional session sends first, and EndTxn (Kafka Streams: commit-latency).", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		aborts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "transaction_aborts_total",
			Help: "Transactions aborted (rebalance, produce failure, fencing); their records are decided again."}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "transaction_records",
			Help: "Command records per committed transaction.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		restoreSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "restore_last_duration_seconds",
			Help: "Duration of the last restore of a partition."}, []string{"partition"}),
		restoreDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "restore_duration_seconds",
			Help: "Duration of partition restores (open the store, replay the changelog, rebuild the timers), by kind: " +
				"full (the whole log into a new, empty or wiped store), tail (the changelog after the store's offset), current (nothing to read).",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10)}, []string{"kind"}),
		restoreRemaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "restore_remaining_records",
			Help: "Changelog records left to restore (Kafka Streams: restore-remaining-records-total)."}, []string{"partition"}),
		restored: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "restored_records_total",
			Help: "Changelog records restored into local state."}, []string{"partition"}),
		storeWipes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "state_wipes_total",
			Help: "Local stores wiped and rebuilt in full (corrupt, ahead of the log, or of another topic)."}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "session_restarts_total",
			Help: "Kafka sessions replaced after a failure (Kafka Streams: replaced stream threads)."}),
		processLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "process_latency_seconds",
			Help:    "Command record timestamp to its decision (Kafka Streams: process-latency, measured from the record time).",
			Buckets: latencyBuckets}),
		e2eLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "end_to_end_latency_seconds",
			Help:    "Command record timestamp to the commit of the transaction holding its result (Kafka Streams: record-e2e-latency).",
			Buckets: latencyBuckets}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "consumer_lag_records",
			Help: "Command records behind the last stable offset, per partition (Kafka Streams: records-lag)."}, []string{"partition"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "active_reservations",
			Help: "Active reservations in committed state, per partition."}, []string{"partition"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "expiry_backlog",
			Help: "Holds the partition's last timer run found more than 1 s past expires_at and not yet expired (0 when expiry keeps up)."}, []string{"partition"}),
		expiryLag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "expiry_lag_seconds",
			Help: "Delay between a hold's expires_at and its expiry decision.", Buckets: latencyBuckets}),
		standbys: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "standby_partitions",
			Help: "Standby copies this instance keeps warm (Config.StandbyReplicas)."}),
		standbyRecords: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "standby_records_total",
			Help: "Changelog records standby copies applied (catching up and tailing; restored_records_total counts the owners' restores only)."}),
		standbyLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "standby_lag_records",
			Help: "Changelog offsets a standby copy is behind the last stable offset, per partition (0: a failover replays nothing)."}, []string{"partition"}),
		oversold: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "oversold_skus",
			Help: "SKUs with available < 0 (stock set below reserved), per partition."}, []string{"partition"}),
	}
	running := registerShared(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reservations_partitions_running",
		Help: "Partitions this instance runs (restored and deciding), by role; 0 when it runs none (alert when the sum over instances is 0 or absent)."},
		[]string{"role"}))
	m.running = running.WithLabelValues(r.name())
	m.running.Set(0)
	shared := prometheus.WrapRegistererWith(prometheus.Labels{"role": r.name()}, reg)
	shared.MustRegister(m.processLatency, m.e2eLatency, m.lag, m.active, m.backlog, m.expiryLag, m.oversold)
	shared.MustRegister(m.standbys, m.standbyRecords, m.standbyLag)
	shared.MustRegister(m.processed, m.duplicates, m.notices, m.dlq, m.poison, m.forwarded, m.expired, m.tombstoned, m.coalesced, m.cacheBytes, m.storeReads,
		m.decideSeconds, m.flushSeconds, m.commitSeconds, m.aborts, m.batchRecords, m.restoreSeconds, m.restoreDuration, m.restoreRemaining, m.restored, m.storeWipes, m.restarts)
	m.rolePartition = r.register(reg)
	return m
}

// cartResult counts one cart result, like result does for SKU results.
func (m *metrics) cartResult(r *schemas.CartResult) {
	if r.Duplicate {
		m.duplicates.Inc()
		return
	}
	t := r.Type
	if !slices.Contains(schemas.CartCommandTypes, t) {
		t = "other"
	}
	reason := r.Reason
	if reason != "" && !slices.Contains(schemas.Reasons, reason) && !slices.Contains(schemas.CartReasons, reason) {
		reason = "other"
	}
	m.processed.WithLabelValues(t, r.Outcome, reason).Inc()
}

func (m *metrics) result(r *schemas.Result) {
	switch {
	case r.Duplicate:
		m.duplicates.Inc()
	case r.CommandID == "" && (r.Type == schemas.TypeExpired || r.Type == schemas.TypeLowStock):
		m.notices.WithLabelValues(r.Type).Inc()
	default:
		t := r.Type
		if !slices.Contains(schemas.CommandTypes, t) {
			t = "other"
		}
		m.processed.WithLabelValues(t, r.Outcome, r.Reason).Inc()
	}
}

var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5, 5, 10}

// forget removes the per-partition series of a partition this instance no
// longer owns, so that sums over instances stay right.
func (m *metrics) forget(p int32) {
	l := partLabel(p)
	for _, g := range append([]*prometheus.GaugeVec{m.lag, m.active, m.backlog, m.oversold, m.restoreRemaining}, m.rolePartition...) {
		g.DeleteLabelValues(l)
	}
}

func partLabel(p int32) string { return strconv.Itoa(int(p)) }
