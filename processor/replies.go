package processor

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
)

// This file routes the decision of a command sent with reply_to "replies"
// (schemas/README.md, extension (l)) to partition reply_partition of the
// replies topic, in the open transaction: the same result JSON as on the
// results topic, with the command_id header and the command's trace context.
// The request/reply client instance that reads that partition gets its
// replies without reading the results topic. The cart role routes its cart
// results the same way (cartrole.go), by the route the cart core kept with
// the cart command (cart.Outputs.Replies).
//
// A decision is never failed for its reply: without a replies topic, or with
// a reply_partition the topic does not have, it is written to the results
// topic as always and the reply is dropped (logged once, counted in
// reservations_replies_total).

// Reply outcomes: the label values of reservations_replies_total.
const (
	replyRouted     = "routed"
	replyNoTopic    = "no_topic"
	replyOutOfRange = "out_of_range"
)

const (
	// replyRefreshEvery is how old the replies partition count may get before
	// a partition refreshes it (in the background).
	replyRefreshEvery = 30 * time.Second
	// replyRecheckOutOfRange is the least time between refreshes caused by a
	// reply_partition beyond the known count (the topic may have grown).
	replyRecheckOutOfRange = time.Second
	// replyLookupTimeout bounds one lookup of the partition count.
	replyLookupTimeout = 5 * time.Second
)

// replyRoute is a role's knowledge of the replies topic, shared by its
// partitions (their goroutines call it concurrently). The SKU role routes
// decisions, the cart role cart results.
type replyRoute struct {
	total *prometheus.CounterVec

	mu sync.Mutex
	// parts is the replies topic's partition count: 0 when it does not exist.
	parts      int32
	checked    time.Time // when parts was last looked up; zero: never
	refreshing bool
	warned     map[string]bool // outcome -> logged once
}

// register registers reservations_replies_total (shared by the roles of one
// registry, labelled by role, like the processor's shared metrics) and counts
// role's outcomes.
func (rr *replyRoute) register(reg prometheus.Registerer, role string) {
	vec := registerShared(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "reservations", Name: "replies_total",
		Help: "Decisions (cart results, in the cart role) of commands sent with reply_to \"replies\", by role and outcome: " +
			"routed (copied to the replies topic), no_topic (the replies topic does not exist), out_of_range " +
			"(reply_partition beyond its partitions). Unrouted decisions are still written to the results topic."},
		[]string{"role", "outcome"}))
	rr.total = vec.MustCurryWith(prometheus.Labels{"role": role})
	for _, o := range []string{replyRouted, replyNoTopic, replyOutOfRange} {
		rr.total.WithLabelValues(o)
	}
}

// lookup reads the replies topic's partition count (0 when it does not exist)
// with the partition's admin client; ok is false when it could not be read.
func lookupReplies(ctx context.Context, env *partitionEnv) (n int32, ok bool) {
	if env.all.Replies == "" || env.changelog == nil || env.changelog.adm == nil {
		return 0, true
	}
	ctx, cancel := context.WithTimeout(ctx, replyLookupTimeout)
	defer cancel()
	td, err := env.changelog.adm.ListTopics(ctx, env.all.Replies)
	if err != nil {
		env.log.Warn("reply_to replies: cannot read the replies topic's partitions", "topic", env.all.Replies, "err", err)
		return 0, false
	}
	if d, found := td[env.all.Replies]; found && d.Err == nil {
		return int32(len(d.Partitions)), true
	}
	return 0, true
}

// warm looks the partition count up once, synchronously, before the
// partition decides its first command (restored).
func (rr *replyRoute) warm(ctx context.Context, env *partitionEnv) {
	rr.mu.Lock()
	known := !rr.checked.IsZero()
	rr.mu.Unlock()
	if known {
		return
	}
	n, ok := lookupReplies(ctx, env)
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if ok {
		rr.parts = n
	}
	rr.checked = time.Now()
}

// partitions returns the known partition count; when it is older than
// maxAge, a background refresh starts (one at a time).
func (rr *replyRoute) partitions(env *partitionEnv, maxAge time.Duration) int32 {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if !rr.refreshing && time.Since(rr.checked) >= maxAge {
		rr.refreshing = true
		go func() {
			n, ok := lookupReplies(context.Background(), env)
			rr.mu.Lock()
			defer rr.mu.Unlock()
			if ok {
				rr.parts = n
			}
			rr.checked = time.Now()
			rr.refreshing = false
		}()
	}
	return rr.parts
}

// once logs msg the first time outcome happens, and counts every time.
func (rr *replyRoute) unrouted(w *partition, outcome, msg string, args ...any) {
	if rr.total != nil {
		rr.total.WithLabelValues(outcome).Inc()
	}
	rr.mu.Lock()
	first := !rr.warned[outcome]
	if first {
		if rr.warned == nil {
			rr.warned = map[string]bool{}
		}
		rr.warned[outcome] = true
	}
	rr.mu.Unlock()
	if first {
		w.log.Warn(msg+" (logged once; see reservations_replies_total)", args...)
	}
}

// replyTo routes the decision on cmd (the first result carrying its command
// id; notices are never routed) to the replies partition cmd names, when cmd
// asks for it with valid fields. src is the command record.
func (rr *replyRoute) replyTo(w *partition, cmd *schemas.Command, results []schemas.Result, src *kgo.Record) {
	if cmd.ReplyTo != schemas.ReplyToReplies || cmd.ReplyPartition == nil ||
		*cmd.ReplyPartition < 0 || *cmd.ReplyPartition > schemas.MaxReplyPartition {
		return
	}
	i := slices.IndexFunc(results, func(r schemas.Result) bool { return r.CommandID == cmd.CommandID })
	if i < 0 {
		return
	}
	want := int32(*cmd.ReplyPartition)
	if !rr.routable(w, want, cmd.CommandID) {
		return
	}
	v := schemas.AppendResult(make([]byte, 0, 512), &results[i])
	rr.write(w, want, []byte(results[i].SKU), v, cmd.CommandID, src)
}

// routable reports whether partition want of the replies topic exists; when
// it does not (or the topic does not), it counts and logs (once) why the
// decision is not routed. It is the check of every role that routes replies
// (the SKU role's decisions, the cart role's cart results).
func (rr *replyRoute) routable(w *partition, want int32, commandID string) bool {
	env := w.env
	n := rr.partitions(env, replyRefreshEvery)
	if want >= n {
		// The topic may have been created or grown since the last look.
		n = rr.partitions(env, replyRecheckOutOfRange)
	}
	switch {
	case n == 0:
		rr.unrouted(w, replyNoTopic, "reply_to replies: no replies topic; decisions are written to the results topic only",
			"topic", env.all.Replies, "command_id", commandID)
		return false
	case want >= n:
		rr.unrouted(w, replyOutOfRange, "reply_to replies: reply_partition beyond the replies topic's partitions; "+
			"the decision is written to the results topic only",
			"topic", env.all.Replies, "reply_partition", want, "partitions", n, "command_id", commandID)
		return false
	}
	return true
}

// write produces one reply (value: the decision's JSON as on the results
// topic) to partition want of the replies topic, in the open transaction,
// with the command_id header and the trace context of src, and counts it.
func (rr *replyRoute) write(w *partition, want int32, key, value []byte, commandID string, src *kgo.Record) {
	w.produce(&kgo.Record{
		Topic: w.env.all.Replies, Partition: want, Key: key, Value: value,
		Headers: append([]kgo.RecordHeader{{Key: HeaderCommandID, Value: []byte(commandID)}}, traceHeaders(src)...),
	}, w.promise)
	if rr.total != nil {
		rr.total.WithLabelValues(replyRouted).Inc()
	}
}
