package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
)

// The reply route (docs/CLIENT.md, schemas/README.md extension (l)): the
// client instance is a member of a consumer group on the replies topic and
// reads only the replies partitions assigned to it. Every command it sends
// carries reply_to "replies" and one of those partitions, and the processor
// copies the decision there in its transaction. With no more instances than
// replies partitions, no instance reads another's replies.
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

// sendReply sends cmd (valid, without reply fields) with reply_to "replies"
// and one of the instance's replies partitions, and returns the raw result.
// It sends again, same command_id, when the partition is revoked; without any
// partition it sends through the results topic (Send).
func (c *Client) sendReply(ctx context.Context, cmd schemas.Command) ([]byte, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.timeout)
		defer cancel()
	}
	fail := func(kind error, step string, err error) error {
		if c.ctx.Err() != nil {
			err = ErrClosed
		}
		return &CallError{CommandID: cmd.CommandID, Kind: kind, Step: step, Err: err}
	}
	w := &replyWait{res: make(chan []byte, 1), moved: make(chan struct{}, 1)}
	defer c.unwaitReply(cmd.CommandID, w)
	for sends := 0; ; sends++ {
		select {
		case v, ok := <-w.res:
			if ok {
				return v, nil
			}
			return nil, fail(ErrNoResult, "wait for the reply", ErrClosed)
		default:
		}
		part, ok := c.pick(cmd.CommandID, w)
		if !ok {
			// No replies partition (more instances than partitions, or all
			// of ours moved): the results topic answers.
			cmd.ReplyTo, cmd.ReplyPartition = "", nil
			v, err := json.Marshal(cmd)
			if err != nil {
				return nil, fmt.Errorf("client: encode command: %w", err)
			}
			return c.Send(ctx, Record{Key: cmd.SKU, Value: v, CommandID: cmd.CommandID})
		}
		p := int64(part)
		cmd.ReplyTo, cmd.ReplyPartition = schemas.ReplyToReplies, &p
		v, err := json.Marshal(cmd)
		if err != nil {
			return nil, fmt.Errorf("client: encode command: %w", err)
		}
		if sends == 0 {
			c.stats.calls.Add(1)
		} else {
			c.stats.resent.Add(1)
		}
		if err := c.produce(ctx, &kgo.Record{Topic: c.names.Commands, Key: []byte(cmd.SKU), Value: v}); err != nil {
			return nil, fail(ErrUnavailable, "produce to "+c.names.Commands, err)
		}
		select {
		case v, ok := <-w.res:
			if !ok {
				return nil, fail(ErrNoResult, "wait for the reply", ErrClosed)
			}
			return v, nil
		case <-w.moved:
			c.opts.log.Debug("client: replies partition moved, sending again", "command_id", cmd.CommandID, "partition", p)
		case <-ctx.Done():
			return nil, fail(ErrNoResult, fmt.Sprintf("wait for the reply on %s partition %d", c.names.Replies, p), ctx.Err())
		}
	}
}
