package sink

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/reservations/reservations/topics"
)

// metrics of the sink: namespace reservations, subsystem sink. Labels are
// bounded: kind, table, op, partition, reason.
type metrics struct {
	consumed      *prometheus.CounterVec // kind
	rows          *prometheus.CounterVec // table, op
	batchDuration prometheus.Histogram
	batchRecords  prometheus.Histogram
	pgErrors      prometheus.Counter
	decodeErrors  prometheus.Counter
	kafkaErrors   prometheus.Counter
	lag           *prometheus.GaugeVec // partition
	ready         prometheus.Gauge
	stale         *prometheus.CounterVec // reason

	// The audit trail (audit.go).
	auditRows    *prometheus.CounterVec // source
	auditLag     *prometheus.GaugeVec   // source
	auditErrors  prometheus.Counter
	auditGaps    prometheus.Counter
	auditDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "reservations", "sink"
	m := &metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "records_consumed_total",
			Help: "Changelog records applied to Postgres (committed), by kind: stock, reservation, ignored.",
		}, []string{"kind"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rows_written_total",
			Help: "Rows changed in Postgres, by table and op (upsert, delete); upserts skipped by the version guard are not counted.",
		}, []string{"table", "op"}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "batch_duration_seconds",
			Help:    "Time to write one batch to Postgres, begin to commit (the commit latency).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "batch_records",
			Help:    "Changelog records per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		pgErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "postgres_errors_total",
			Help: "Failed Postgres operations (each is retried with backoff).",
		}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "decode_errors_total",
			Help: "Changelog records skipped because their value cannot be decoded (recorded in sink_errors).",
		}),
		kafkaErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "kafka_errors_total",
			Help: "Fetch and metadata errors returned by the Kafka client.",
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "records_lag",
			Help: "Records of the changelog partition not yet in Postgres: last stable offset minus next offset (Kafka Streams records-lag).",
		}, []string{"partition"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "ready",
			Help: "1 while the sink reaches Postgres, else 0.",
		}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "stale_partitions_total",
			Help: "Changelog partitions whose stored offset the sink found it could not resume, by reason: " +
				"behind_log_start (records after it were deleted), ahead_of_log_end (topic recreated or truncated), " +
				"away (not current for longer than half the changelog's delete.retention.ms: tombstones may have been " +
				"compacted away). Each is re-snapshotted from the log start.",
		}, []string{"reason"}),
		auditRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "audit_rows_total",
			Help: "Rows inserted into audit_events (committed), by source: results, cart_results.",
		}, []string{"source"}),
		auditLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "audit_records_lag",
			Help: "Records of the results topic not yet in audit_events, summed over its partitions, by source: results, cart_results.",
		}, []string{"source"}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "audit_errors_total",
			Help: "Interruptions of the audit trail (Postgres or Kafka failures); each is retried from the stored offsets.",
		}),
		auditGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "audit_gaps_total",
			Help: "Results partitions whose stored offset the topic no longer held: records lost to the audit (recorded in audit_gaps).",
		}),
		auditDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "audit_partitions_dropped_total",
			Help: "Monthly partitions of audit_events dropped by the audit retention.",
		}),
	}
	for _, c := range []prometheus.Collector{m.consumed, m.rows, m.batchDuration, m.batchRecords,
		m.pgErrors, m.decodeErrors, m.kafkaErrors, m.lag, m.ready, m.stale,
		m.auditRows, m.auditLag, m.auditErrors, m.auditGaps, m.auditDropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, k := range kindNames {
		m.consumed.WithLabelValues(k)
	}
	for _, src := range []string{"results", "cart_results"} {
		m.auditRows.WithLabelValues(src)
	}
	// Exposed at 0 from the start, so that increase() sees the first one.
	for _, r := range staleReasons {
		m.stale.WithLabelValues(r)
	}
	return m, nil
}

// committed records a committed batch.
func (m *metrics) committed(b *batch, n rowCounts) {
	for i, k := range kindNames {
		m.consumed.WithLabelValues(k).Add(float64(b.kinds[i]))
	}
	m.rows.WithLabelValues("stock", "upsert").Add(float64(n.stockUpserted))
	m.rows.WithLabelValues("stock", "delete").Add(float64(n.stockDeleted))
	m.rows.WithLabelValues("reservations", "upsert").Add(float64(n.reservationsUpserted))
	m.rows.WithLabelValues("reservations", "delete").Add(float64(n.reservationsDeleted))
	m.decodeErrors.Add(float64(len(b.bad)))
	m.batchRecords.Observe(float64(b.records))
}

func (m *metrics) setLag(partition int32, lag int64) {
	m.lag.WithLabelValues(topics.PartitionString(partition)).Set(float64(max(lag, 0)))
}
