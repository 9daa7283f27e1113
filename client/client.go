// Package client is the request/reply client of the reservation pipeline: a
// service calls Reserve, Commit, CartReserve, ... and gets the decision, typed
// as the contract's result (schemas.Result, schemas.CartResult).
//
// A call builds the command (schemas types), validates it with the contract's
// rules (schemas.Command.Validate: an invalid command is an error wrapping
// ErrInvalid and the *schemas.FieldError naming the field, and is never sent),
// produces it keyed by SKU (cart commands: by cart_id) with the default
// murmur2 partitioner, and waits for the result carrying its command_id.
//
// Business rejections are results: Outcome "rejected" with a reason code, and
// a nil error. Errors are for what is not a decision: ErrInvalid (caught
// before sending), ErrUnavailable (the command could not be written to
// Kafka), ErrNoResult (written, but no result before the context's deadline).
// The last two come as a *CallError naming the command_id: call again with
// that id (the field CommandID of the request) and the retry is answered with
// the original decision (duplicate: true), never decided twice.
//
// Reading results (docs/CLIENT.md) has two modes:
//
//   - The reply route (default; replies.go): the instance is a member of the
//     consumer group <prefix>-clients on <prefix>.replies and reads only its
//     assigned partitions. Every command it sends carries reply_to "replies"
//     and one of them (contract extension (l)), so the processor copies the
//     decision there. With no more instances than replies partitions, no
//     instance reads another's replies. A call whose partition moves to
//     another instance sends its command again with the same command_id.
//     Cart calls take the same route (the coordinator copies the cart
//     result there when the saga ends), and so does Send for a value that is
//     a valid command without reply fields.
//   - The results mode (WithResultsPartitions; also without a replies topic,
//     for a command that sets reply_to itself, and for Send of any other
//     value): the client reads only the result
//     partitions that have calls in flight, each from its end offset listed
//     before the first of those calls was sent, and stops reading a
//     partition a short linger after its last call returns. It never reads a
//     partition nobody waits on, and never from the start of a topic.
//
// Invariants:
//   - A result (reply) partition's fetch offset is at or before its end when
//     a call that waits on it sends its command, so no result is missed.
//   - A call is answered by the first result with its command_id read after
//     it registered; a result read earlier for the same id is the same
//     decision (idempotency), so either answers it.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkaauth"
	"github.com/reservations/reservations/topics"
)

// Security is how the client connects and authenticates to Kafka (TLS, mutual
// TLS, SASL PLAIN/SCRAM/OAUTHBEARER): the same settings as the processor's
// --kafka-* flags. The zero value is plaintext without SASL.
type Security = kafkaauth.Config

// Errors of a call (match with errors.Is).
var (
	// ErrInvalid: the command breaks a rule of the contract; it was not sent.
	// The error also wraps the *schemas.FieldError naming the field.
	ErrInvalid = errors.New("invalid command")
	// ErrUnavailable: the command could not be written to Kafka (broker
	// unreachable, not authorized, ...). It may or may not have been written:
	// retry with the same command id.
	ErrUnavailable = errors.New("kafka unavailable")
	// ErrNoResult: the command was written but its result did not come
	// before the context ended: retry with the same command id.
	ErrNoResult = errors.New("no result in time")
	// ErrClosed: the client is closed.
	ErrClosed = errors.New("client closed")
)

// CallError is an ErrUnavailable or ErrNoResult failure of one call.
type CallError struct {
	// CommandID is the id the command was sent with: retry with it.
	CommandID string
	// Kind is ErrUnavailable or ErrNoResult.
	Kind error
	// Step says what the call was doing.
	Step string
	// Err is the cause (a Kafka error, context.DeadlineExceeded, ...).
	Err error
}

func (e *CallError) Error() string {
	return fmt.Sprintf("%v for command_id %q: %s: %v", e.Kind, e.CommandID, e.Step, e.Err)
}

// Is makes errors.Is(err, ErrNoResult) (or ErrUnavailable) true.
func (e *CallError) Is(target error) bool { return target == e.Kind }

// Unwrap returns the cause.
func (e *CallError) Unwrap() error { return e.Err }

// Option configures a Client.
type Option func(*options)

type options struct {
	prefix   string
	security Security
	kgo      []kgo.Opt
	timeout  time.Duration
	linger   time.Duration
	log      *slog.Logger
	newID    func() string
	// results: read result partitions (no reply route); group: the consumer
	// group of the reply route.
	results bool
	group   string
}

// WithResultsPartitions makes the client read the result partitions of the
// calls it has in flight (the mode of clients before the reply route): no
// consumer group, no replies topic needed, but N instances under load each
// read nearly every result of the busy partitions (docs/CLIENT.md). The
// default is the reply route, which falls back to this mode when the replies
// topic does not exist.
func WithResultsPartitions() Option { return func(o *options) { o.results = true } }

// WithRepliesGroup sets the consumer group of the reply route (default
// "<prefix>-clients"). Instances that share it share the replies topic's
// partitions; every instance sending with the same prefix should use the same
// group, so that no two read the same replies partition.
func WithRepliesGroup(group string) Option { return func(o *options) { o.group = group } }

// WithTopicPrefix sets the topic prefix (default "reservations").
func WithTopicPrefix(prefix string) Option { return func(o *options) { o.prefix = prefix } }

// WithSecurity sets TLS and SASL (default: plaintext, no SASL).
func WithSecurity(s Security) Option { return func(o *options) { o.security = s } }

// WithKafkaOpts adds franz-go client options, applied after the client's own
// (RequestReplyOpts), to both Kafka clients of an instance (the reply route's
// group member too). They must not configure consuming (no consumer group, no
// ConsumeTopics): the client sets that up itself.
func WithKafkaOpts(opts ...kgo.Opt) Option {
	return func(o *options) { o.kgo = append(o.kgo, opts...) }
}

// WithTimeout bounds a call whose context has no deadline (default 10 s).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithPartitionLinger is how long a result partition stays subscribed after
// its last call returned (default 250 ms; 0 unsubscribes at once). A
// partition that gets a call again within it needs no new end offset, which
// saves a round trip per call under steady load.
func WithPartitionLinger(d time.Duration) Option { return func(o *options) { o.linger = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithIDGenerator sets how command ids are made for requests without one
// (default: "req-" and 16 random hex characters). Ids must be unique, 1..128
// characters, and must not start with "cart-" (reserved for the cart
// coordinator).
func WithIDGenerator(f func() string) Option { return func(o *options) { o.newID = f } }

// RequestReplyOpts are the franz-go settings of a request/reply caller: no
// producer linger (franz-go lingers 10 ms by default, most of a reply's
// latency at low load), results read read_committed (never act on an aborted
// decision) with a short fetch wait (50 ms instead of 500 ms).
func RequestReplyOpts(brokers ...string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ProducerLinger(0),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(50 * time.Millisecond),
	}
}

// NewID returns a random command id: "req-" and 16 hex characters.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "req-" + hex.EncodeToString(b[:])
}

// Client sends commands and waits for their results. It is safe for
// concurrent use; one per process is enough (it multiplexes every call over
// one Kafka client).
type Client struct {
	opts  options
	names topics.Names
	cl    *kgo.Client
	adm   *kadm.Client
	// cmdParts and cartParts are the partition counts of commands (= results)
	// and cart-commands (= cart-results); cartParts is 0 without cart topics.
	cmdParts, cartParts int32

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	waiters map[waitKey][]chan []byte
	parts   map[topicPartition]*partState

	// The reply route (replies.go); rcl is nil in the results mode.
	rcl   *kgo.Client
	rdone chan struct{}
	// owned are the replies partitions assigned and started; rwait the calls
	// waiting for their reply by command_id; hasReplies is closed (and set to
	// nil) when the first partition is owned (all c.mu).
	owned      []int32
	rnext      int
	rwait      map[string][]*replyWait
	hasReplies chan struct{}

	stats struct {
		calls, read, matched, subscribes, resent atomic.Int64
	}
}

type waitKey struct{ topic, id string }

type topicPartition struct {
	topic string
	p     int32
}

// partState is one result partition the client reads (or is about to).
type partState struct {
	refs  int
	ready chan struct{} // closed once the partition is subscribed, or failed
	err   error
	idle  *time.Timer
}

// New connects to brokers and reads the partition counts of the topics. The
// commands and results topics must exist; without the cart topics the cart
// calls fail.
func New(ctx context.Context, brokers []string, opts ...Option) (*Client, error) {
	o := options{prefix: topics.DefaultPrefix, timeout: 10 * time.Second, linger: 250 * time.Millisecond,
		log: slog.Default(), newID: NewID}
	for _, f := range opts {
		f(&o)
	}
	if o.group == "" {
		prefix := o.prefix
		if prefix == "" {
			prefix = topics.DefaultPrefix
		}
		o.group = prefix + "-clients"
	}
	if len(brokers) == 0 {
		return nil, errors.New("client: no brokers")
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("client: timeout %s: must be > 0", o.timeout)
	}
	sec, err := o.security.Opts()
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	kopts := append(append(RequestReplyOpts(brokers...), sec...), o.kgo...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("client: kafka client: %w", err)
	}
	c := &Client{opts: o, names: topics.NewNames(o.prefix), cl: cl, adm: kadm.NewClient(cl),
		done: make(chan struct{}), waiters: make(map[waitKey][]chan []byte), parts: make(map[topicPartition]*partState),
		rwait: make(map[string][]*replyWait)}
	replies, err := c.layout(ctx)
	if err != nil {
		cl.Close()
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if !o.results && !replies {
		o.log.Warn("client: the replies topic does not exist: reading result partitions instead (an older deployment; "+
			"create it to use the reply route)", "topic", c.names.Replies)
	}
	if !o.results && replies {
		c.hasReplies = make(chan struct{})
		c.rcl, err = kgo.NewClient(append(append(append(RequestReplyOpts(brokers...), sec...), o.kgo...), c.repliesGroupOpts()...)...)
		if err != nil {
			c.cancel()
			cl.Close()
			return nil, fmt.Errorf("client: kafka client of the replies group: %w", err)
		}
		c.rdone = make(chan struct{})
		go c.pollReplies()
		c.waitForReplies(ctx)
	}
	go c.poll()
	return c, nil
}

// layout reads the partition counts and checks that results (cart-results)
// have as many as commands (cart-commands); replies tells whether the replies
// topic exists.
func (c *Client) layout(ctx context.Context) (replies bool, err error) {
	n := c.names
	td, err := c.adm.ListTopics(ctx, n.Commands, n.Results, n.CartCommands, n.CartResults, n.Replies)
	if err != nil {
		return false, fmt.Errorf("client: %w: list topics: %w", ErrUnavailable, err)
	}
	count := func(t string) int32 {
		if d, ok := td[t]; ok && d.Err == nil {
			return int32(len(d.Partitions))
		}
		return 0
	}
	c.cmdParts = count(n.Commands)
	for _, t := range []string{n.Commands, n.Results} {
		if count(t) == 0 {
			return false, fmt.Errorf("topic %s does not exist: %w", t, topics.ErrMissing)
		}
	}
	if r := count(n.Results); r != c.cmdParts {
		return false, fmt.Errorf("client: %w: %s has %d partitions, %s has %d", topics.ErrLayout, n.Results, r, n.Commands, c.cmdParts)
	}
	if cc, cr := count(n.CartCommands), count(n.CartResults); cc > 0 && cr == cc {
		c.cartParts = cc
	}
	return count(n.Replies) > 0, nil
}

// Close stops reading results (and leaves the replies group); calls in
// flight fail with ErrClosed.
func (c *Client) Close() {
	c.cancel()
	if c.rcl != nil {
		c.rcl.Close()
		<-c.rdone
	}
	c.cl.Close()
	<-c.done
}

// Stats are counters of a Client since New.
type Stats struct {
	// Calls is the number of commands sent.
	Calls int64
	// RecordsRead is the number of result and reply records read (every
	// record of the partitions read, notices and other callers' results
	// included).
	RecordsRead int64
	// ResultsMatched is the number of records that answered a waiting call.
	ResultsMatched int64
	// Subscribes is how often a result partition was subscribed (each costs
	// one end-offset request).
	Subscribes int64
	// Resent is how often a command was sent again, same command_id, because
	// the replies partition it named was assigned to another instance.
	Resent int64
}

// Stats returns the client's counters. RecordsRead / ResultsMatched is its
// read amplification.
func (c *Client) Stats() Stats {
	return Stats{Calls: c.stats.calls.Load(), RecordsRead: c.stats.read.Load(), ResultsMatched: c.stats.matched.Load(),
		Subscribes: c.stats.subscribes.Load(), Resent: c.stats.resent.Load()}
}

// poll reads the subscribed result partitions and hands each record to the
// calls waiting for its command_id.
func (c *Client) poll() {
	defer close(c.done)
	defer c.failWaiters()
	for {
		fs := c.cl.PollFetches(c.ctx)
		if c.ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			var loss *kgo.ErrDataLoss
			if errors.As(err, &loss) || errors.Is(err, context.Canceled) {
				return
			}
			c.opts.log.Warn("client: fetch results", "topic", t, "partition", p, "err", err)
		})
		fs.EachRecord(c.deliver)
	}
}

func (c *Client) deliver(r *kgo.Record) {
	c.stats.read.Add(1)
	id := commandID(r)
	if id == "" {
		return
	}
	k := waitKey{r.Topic, id}
	c.mu.Lock()
	ws := c.waiters[k]
	delete(c.waiters, k)
	c.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	c.stats.matched.Add(1)
	for _, w := range ws {
		w <- r.Value // buffered, one value per waiter
	}
}

// commandID is the record's command_id header (results and cart results
// carry it; notices have none).
func commandID(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == "command_id" {
			return string(h.Value)
		}
	}
	return ""
}

// failWaiters closes every waiting call's channel when the client stops.
func (c *Client) failWaiters() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, ws := range c.waiters {
		for _, w := range ws {
			close(w)
		}
		delete(c.waiters, k)
	}
}

// Record is one command ready to send: Send's input.
type Record struct {
	// Key is the record key: the SKU, or the cart_id of a cart command.
	Key string
	// Value is the command JSON, sent as is.
	Value []byte
	// CommandID is the command's command_id (the result is matched by it).
	CommandID string
	// Cart sends to cart-commands and waits on cart-results.
	Cart bool
}

// Send produces rec and returns the raw JSON of its result (cart result).
// `reservations send --json` uses it to send any JSON, invalid commands
// included. On the reply route (the default), a value that is a valid command
// (cart command) with command_id rec.CommandID and no reply fields is sent
// with reply_to "replies" and a replies partition of this instance added
// before its closing brace (the rest of the bytes unchanged), and answered
// there. Any other value is sent as is and its result read from the results
// (cart-results) topic: a value that sets reply_to or reply_partition itself
// is left alone, and an invalid one gets its invalid_command rejection where
// the processor always writes it.
func (c *Client) Send(ctx context.Context, rec Record) ([]byte, error) {
	if c.rcl != nil && rec.CommandID != "" && rec.Key != "" && (!rec.Cart || c.cartParts > 0) {
		if call, ok := rawCall(rec); ok {
			return c.sendReply(ctx, call)
		}
	}
	return c.sendResults(ctx, rec)
}

// noCartTopics is the error of a cart call without the cart topics.
func (c *Client) noCartTopics() error {
	return fmt.Errorf("topic %s or %s (the cart coordinator's) does not exist, or their partition counts differ: %w",
		c.names.CartCommands, c.names.CartResults, topics.ErrMissing)
}

// sendResults produces rec as is and returns the raw JSON of its result,
// read from the results (cart-results) topic (the results mode).
func (c *Client) sendResults(ctx context.Context, rec Record) ([]byte, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.timeout)
		defer cancel()
	}
	in, out, n := c.names.Commands, c.names.Results, c.cmdParts
	if rec.Cart {
		if c.cartParts == 0 {
			return nil, c.noCartTopics()
		}
		in, out, n = c.names.CartCommands, c.names.CartResults, c.cartParts
	}
	if rec.CommandID == "" || rec.Key == "" {
		return nil, fmt.Errorf("client: %w: record without key or command id", ErrInvalid)
	}
	tp := topicPartition{out, topics.Partition([]byte(rec.Key), n)}
	fail := func(kind error, step string, err error) error {
		if c.ctx.Err() != nil {
			err = ErrClosed
		}
		return &CallError{CommandID: rec.CommandID, Kind: kind, Step: step, Err: err}
	}

	// Wait for the result before producing: registered first, and the
	// partition subscribed at an offset before the command.
	w := make(chan []byte, 1)
	k := waitKey{out, rec.CommandID}
	c.mu.Lock()
	c.waiters[k] = append(c.waiters[k], w)
	c.mu.Unlock()
	defer c.unwait(k, w)
	st, err := c.subscribe(ctx, tp)
	if err != nil {
		return nil, fail(ErrUnavailable, fmt.Sprintf("list the end offset of %s partition %d", tp.topic, tp.p), err)
	}
	defer c.unsubscribe(tp, st)

	c.stats.calls.Add(1)
	if err := c.produce(ctx, &kgo.Record{Topic: in, Key: []byte(rec.Key), Value: rec.Value}); err != nil {
		return nil, fail(ErrUnavailable, "produce to "+in, err)
	}
	select {
	case v, ok := <-w:
		if !ok {
			return nil, fail(ErrNoResult, "wait for the result", ErrClosed)
		}
		return v, nil
	case <-ctx.Done():
		return nil, fail(ErrNoResult, fmt.Sprintf("wait for the result on %s partition %d", tp.topic, tp.p), ctx.Err())
	}
}

// produce writes r, sending it again (the same bytes, so the same command_id)
// after an error that may heal, until ctx ends. franz-go already retries
// retriable errors itself; this covers a record that timed out or a
// connection lost mid-request.
func (c *Client) produce(ctx context.Context, r *kgo.Record) error {
	backoff := 50 * time.Millisecond
	for {
		err := c.cl.ProduceSync(ctx, r).FirstErr()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || c.ctx.Err() != nil || !retriable(err) {
			return err
		}
		c.opts.log.Debug("client: produce failed, sending again", "topic", r.Topic, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		r = &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value}
	}
}

func retriable(err error) bool {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Retriable
	}
	// Timeouts, lost connections and the like: not a verdict on the record.
	return !errors.Is(err, kgo.ErrClientClosed) && !errors.Is(err, context.Canceled)
}

// unwait removes w from the waiters of k (after its call returned).
func (c *Client) unwait(k waitKey, w chan []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.waiters[k]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.waiters, k)
	} else {
		c.waiters[k] = ws
	}
}

// subscribe makes sure tp is read from an offset at or before its current
// end: the first call of an idle partition lists the end offset and adds the
// partition there; later calls find it read already (from an earlier offset).
func (c *Client) subscribe(ctx context.Context, tp topicPartition) (*partState, error) {
	c.mu.Lock()
	st := c.parts[tp]
	if st == nil {
		st = &partState{ready: make(chan struct{})}
		c.parts[tp] = st
		go c.listAndAdd(tp, st)
	}
	st.refs++
	if st.idle != nil {
		st.idle.Stop()
		st.idle = nil
	}
	c.mu.Unlock()
	select {
	case <-st.ready:
	case <-ctx.Done():
		c.unsubscribe(tp, st)
		return nil, ctx.Err()
	}
	if st.err != nil {
		c.unsubscribe(tp, st)
		return nil, st.err
	}
	return st, nil
}

// listAndAdd lists tp's end offset and starts reading it there. It runs on
// its own context so that the call that started it may give up without
// failing the others waiting on the same partition.
func (c *Client) listAndAdd(tp topicPartition, st *partState) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.timeout)
	defer cancel()
	ends, err := c.adm.ListEndOffsets(ctx, tp.topic)
	var off int64
	if err == nil {
		end, ok := ends.Lookup(tp.topic, tp.p)
		switch {
		case !ok:
			err = fmt.Errorf("no end offset of %s partition %d", tp.topic, tp.p)
		case end.Err != nil:
			err = end.Err
		default:
			off = end.Offset
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		st.err = err
		if c.parts[tp] == st {
			delete(c.parts, tp) // the next call tries again
		}
	} else {
		c.stats.subscribes.Add(1)
		c.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{tp.topic: {tp.p: kgo.NewOffset().At(off)}})
	}
	close(st.ready)
	if err == nil && st.refs == 0 {
		c.idle(tp, st) // every call gave up while the offset was listed
	}
}

// unsubscribe drops a call's interest in tp; the last one stops reading it
// after the linger.
func (c *Client) unsubscribe(tp topicPartition, st *partState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.refs--
	if st.refs > 0 || st.err != nil || c.parts[tp] != st {
		return
	}
	select {
	case <-st.ready:
		c.idle(tp, st)
	default: // still listing: listAndAdd calls idle once it added the partition
	}
}

// idle stops reading tp, which no call waits on any more, after the linger
// (c.mu held).
func (c *Client) idle(tp topicPartition, st *partState) {
	if c.opts.linger <= 0 {
		c.remove(tp)
		return
	}
	st.idle = time.AfterFunc(c.opts.linger, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if st.refs == 0 && c.parts[tp] == st {
			c.remove(tp)
		}
	})
}

// remove stops reading tp (c.mu held).
func (c *Client) remove(tp topicPartition) {
	delete(c.parts, tp)
	c.cl.RemoveConsumePartitions(map[string][]int32{tp.topic: {tp.p}})
}
