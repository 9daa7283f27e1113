package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
)

// The reply route (docs/CLIENT.md, schemas/README.md extension (l)): the
// client instance is a member of a consumer group on the replies topic and
// reads only the replies partitions assigned to it. Every command it sends
// carries reply_to "replies" and one of those partitions, and the processor
// copies the decision there in its transaction. With no more instances than
// replies partitions, no instance reads another's replies. Cart commands take
// the same route: the coordinator keeps it with the cart command until the
// saga ends and copies the cart result there.
//
// Invariants:
//   - A partition is handed to calls only once its fetch offset is known and
//     at or before its end (AdjustFetchOffsetsFn lists the end offset of each
//     newly assigned partition and starts there), so no reply to a command
//     sent afterwards is missed.
//   - A call waits on exactly one partition at a time. When it is revoked or
//     lost, the call sends its command again, same command_id, with a
//     partition still owned: the processor answers the retry as a duplicate on
//     the new partition (or the first decision, if the first send was not
//     decided yet). Every call returns once.

// replyWait is one call waiting for its reply.
type replyWait struct {
	p     int32         // the partition its last send named (c.mu)
	res   chan []byte   // the reply (buffered, one value)
	moved chan struct{} // its partition was revoked: send again (buffered)
}

// repliesGroupOpts are the franz-go group settings of the reply route.
func (c *Client) repliesGroupOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(c.opts.group),
		kgo.ConsumeTopics(c.names.Replies),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		// No offsets are committed: a partition is read from its end when
		// assigned, replies only matter to calls in flight.
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		// A joining instance gets partitions after the others noticed the
		// rebalance on a heartbeat (franz-go's default interval is 3 s).
		kgo.HeartbeatInterval(time.Second),
		kgo.AdjustFetchOffsetsFn(c.startAtEnd),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.revoked),
	}
}

// startAtEnd lists the end offsets of newly assigned replies partitions,
// fetches them from there, and hands them to calls.
func (c *Client) startAtEnd(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	parts := offsets[c.names.Replies]
	if len(parts) == 0 {
		return offsets, nil
	}
	var ends map[int32]int64
	backoff := 100 * time.Millisecond
	for {
		lctx, cancel := context.WithTimeout(ctx, c.opts.timeout)
		listed, err := c.adm.ListEndOffsets(lctx, c.names.Replies)
		cancel()
		if err == nil {
			ends = make(map[int32]int64, len(parts))
			for p := range parts {
				o, ok := listed.Lookup(c.names.Replies, p)
				if !ok || o.Err != nil {
					err = fmt.Errorf("no end offset of %s partition %d", c.names.Replies, p)
					break
				}
				ends[p] = o.Offset
			}
		}
		if err == nil {
			break
		}
		c.opts.log.Warn("client: list the end offsets of assigned replies partitions", "topic", c.names.Replies, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	for p, end := range ends {
		parts[p] = kgo.NewOffset().At(end).WithEpoch(-1)
	}
	c.mu.Lock()
	for p := range ends {
		if !slices.Contains(c.owned, p) {
			c.owned = append(c.owned, p)
		}
	}
	slices.Sort(c.owned)
	if len(c.owned) > 0 && c.hasReplies != nil {
		close(c.hasReplies)
		c.hasReplies = nil
	}
	c.mu.Unlock()
	c.opts.log.Debug("client: replies partitions assigned", "partitions", keys(ends))
	return offsets, nil
}

func keys(m map[int32]int64) []int32 {
	ks := make([]int32, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// revoked takes replies partitions away from calls; the calls waiting on
// them send their commands again with a partition still owned.
func (c *Client) revoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	gone := m[c.names.Replies]
	if len(gone) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.owned = slices.DeleteFunc(c.owned, func(p int32) bool { return slices.Contains(gone, p) })
	for _, ws := range c.rwait {
		for _, w := range ws {
			if slices.Contains(gone, w.p) {
				w.p = -1
				select {
				case w.moved <- struct{}{}:
				default:
				}
			}
		}
	}
	c.opts.log.Debug("client: replies partitions revoked", "partitions", gone, "still", c.owned)
}

// ReplyPartitions returns the replies partitions this instance reads now
// (nil when it reads result partitions: WithResultsPartitions, or no replies
// topic).
func (c *Client) ReplyPartitions() []int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.owned)
}

// waitForReplies waits (up to the client's timeout) for the first replies
// partition, so that the first calls after New use the route.
func (c *Client) waitForReplies(ctx context.Context) {
	c.mu.Lock()
	ch := c.hasReplies
	c.mu.Unlock()
	if ch == nil {
		return
	}
	t := time.NewTimer(c.opts.timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-ctx.Done():
	case <-t.C:
		c.opts.log.Warn("client: no replies partition assigned yet: calls read the results topic until one is "+
			"(more client instances than replies partitions?)", "topic", c.names.Replies, "group", c.opts.group)
	}
}

// pollReplies reads the assigned replies partitions and hands each reply to
// the calls waiting for its command_id.
func (c *Client) pollReplies() {
	defer close(c.rdone)
	for {
		fs := c.rcl.PollFetches(c.ctx)
		if c.ctx.Err() != nil || fs.IsClientClosed() {
			c.failReplyWaiters()
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			c.opts.log.Warn("client: fetch replies", "topic", t, "partition", p, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			c.stats.read.Add(1)
			id := commandID(r)
			if id == "" {
				return
			}
			c.mu.Lock()
			ws := c.rwait[id]
			delete(c.rwait, id)
			c.mu.Unlock()
			if len(ws) == 0 {
				return
			}
			c.stats.matched.Add(1)
			for _, w := range ws {
				select {
				case w.res <- r.Value:
				default: // answered already
				}
			}
		})
	}
}

func (c *Client) failReplyWaiters() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, ws := range c.rwait {
		for _, w := range ws {
			close(w.res)
		}
		delete(c.rwait, id)
	}
}

// pick registers w as waiting for id on a partition the instance owns (round
// robin over them) and returns it; false when it owns none.
func (c *Client) pick(id string, w *replyWait) (int32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.owned) == 0 {
		return -1, false
	}
	c.rnext++
	w.p = c.owned[c.rnext%len(c.owned)]
	if !slices.Contains(c.rwait[id], w) {
		c.rwait[id] = append(c.rwait[id], w)
	}
	return w.p, true
}

func (c *Client) unwaitReply(id string, w *replyWait) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := slices.DeleteFunc(c.rwait[id], func(x *replyWait) bool { return x == w })
	if len(ws) == 0 {
		delete(c.rwait, id)
	} else {
		c.rwait[id] = ws
	}
}

// routedCall is one command the reply route sends: its topic, key and id,
// and its value naming a replies partition.
type routedCall struct {
	id, key string
	cart    bool // cart-commands (and cart-results in the results mode)
	// value returns the command's bytes with reply_to "replies" and
	// reply_partition p, or without reply fields when p < 0 (the results
	// mode).
	value func(p int32) ([]byte, error)
}

// commandCall is the routed call of cmd (valid, without reply fields).
func commandCall(cmd schemas.Command) routedCall {
	return routedCall{id: cmd.CommandID, key: cmd.SKU, value: func(p int32) ([]byte, error) {
		cmd.ReplyTo, cmd.ReplyPartition = replyFields(p)
		return encodeCall("command", cmd)
	}}
}

// cartCall is the routed call of cmd (a valid cart command without reply
// fields).
func cartCall(cmd schemas.CartCommand) routedCall {
	return routedCall{id: cmd.CommandID, key: cmd.CartID, cart: true, value: func(p int32) ([]byte, error) {
		cmd.ReplyTo, cmd.ReplyPartition = replyFields(p)
		return encodeCall("cart command", cmd)
	}}
}

// replyFields are the reply_to and reply_partition of a command answered on
// replies partition p; none when p < 0 (the results mode).
func replyFields(p int32) (string, *int64) {
	if p < 0 {
		return "", nil
	}
	part := int64(p)
	return schemas.ReplyToReplies, &part
}

func encodeCall(what string, cmd any) ([]byte, error) {
	v, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("client: encode %s: %w", what, err)
	}
	return v, nil
}

// rawCall is the routed call of a raw record, when its value is a valid
// command (cart command) of id rec.CommandID without reply fields: its value
// is rec.Value with the two fields added before the closing brace. Any other
// record (invalid, undecodable, or with a route of its own) is sent as is
// through the results mode, where every answer the processor gives it
// (invalid_command for a bad reply field or an over-long command_id
// included) is written.
func rawCall(rec Record) (routedCall, bool) {
	if rec.Cart {
		cmd, err := schemas.DecodeCartCommand(rec.Value, 0)
		if err != nil || cmd.Validate() != nil || cmd.CommandID != rec.CommandID || cmd.ReplyTo != "" || cmd.ReplyPartition != nil {
			return routedCall{}, false
		}
	} else {
		cmd, err := schemas.DecodeCommand(rec.Value, 0)
		if err != nil || cmd.Validate() != nil || cmd.CommandID != rec.CommandID || cmd.ReplyTo != "" || cmd.ReplyPartition != nil {
			return routedCall{}, false
		}
	}
	body := bytes.TrimRight(rec.Value, " \t\r\n")
	if len(body) == 0 || body[len(body)-1] != '}' {
		return routedCall{}, false
	}
	body = bytes.TrimRight(body[:len(body)-1], " \t\r\n")
	return routedCall{id: rec.CommandID, key: rec.Key, cart: rec.Cart, value: func(p int32) ([]byte, error) {
		if p < 0 {
			return rec.Value, nil
		}
		v := append(make([]byte, 0, len(body)+48), body...)
		if len(body) > 0 && body[len(body)-1] != '{' {
			v = append(v, ',')
		}
		v = append(v, `"reply_to":"replies","reply_partition":`...)
		v = strconv.AppendInt(v, int64(p), 10)
		return append(v, '}'), nil
	}}, true
}

// sendReply sends call with reply_to "replies" and one of the instance's
// replies partitions, and returns the raw result (cart result). It sends
// again, same command_id, when the partition is revoked; without any
// partition it sends through the results mode (sendResults).
func (c *Client) sendReply(ctx context.Context, call routedCall) ([]byte, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.timeout)
		defer cancel()
	}
	topic := c.names.Commands
	if call.cart {
		topic = c.names.CartCommands
	}
	fail := func(kind error, step string, err error) error {
		if c.ctx.Err() != nil {
			err = ErrClosed
		}
		return &CallError{CommandID: call.id, Kind: kind, Step: step, Err: err}
	}
	w := &replyWait{res: make(chan []byte, 1), moved: make(chan struct{}, 1)}
	defer c.unwaitReply(call.id, w)
	for sends := 0; ; sends++ {
		select {
		case v, ok := <-w.res:
			if ok {
				return v, nil
			}
			return nil, fail(ErrNoResult, "wait for the reply", ErrClosed)
		default:
		}
		part, ok := c.pick(call.id, w)
		if !ok {
			// No replies partition (more instances than partitions, or all
			// of ours moved): the results topic answers.
			v, err := call.value(-1)
			if err != nil {
				return nil, err
			}
			return c.sendResults(ctx, Record{Key: call.key, Value: v, CommandID: call.id, Cart: call.cart})
		}
		v, err := call.value(part)
		if err != nil {
			return nil, err
		}
		if sends == 0 {
			c.stats.calls.Add(1)
		} else {
			c.stats.resent.Add(1)
		}
		if err := c.produce(ctx, &kgo.Record{Topic: topic, Key: []byte(call.key), Value: v}); err != nil {
			return nil, fail(ErrUnavailable, "produce to "+topic, err)
		}
		select {
		case v, ok := <-w.res:
			if !ok {
				return nil, fail(ErrNoResult, "wait for the reply", ErrClosed)
			}
			return v, nil
		case <-w.moved:
			// A cart command still in progress takes the new route
			// (schemas/README.md, extension (l)); a decided one is answered
			// as a duplicate there.
			c.opts.log.Debug("client: replies partition moved, sending again", "command_id", call.id, "partition", part)
		case <-ctx.Done():
			return nil, fail(ErrNoResult, fmt.Sprintf("wait for the reply on %s partition %d", c.names.Replies, part), ctx.Err())
		}
	}
}
