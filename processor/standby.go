package processor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/statestore"
)

// Standby replicas (Config.StandbyReplicas, docs/STANDBY.md).
//
// A standby is a warm copy of a partition another member owns: the group
// leader's balancer (balancer.go) names them in each member's SyncGroup
// assignment. The copy is a partition store like an owned one (same folder,
// same format, same offset bookkeeping): it is restored with the owned
// store's rules (restore.go, stale stores rebuilt in full), then the changelog
// is tailed read_committed, one Badger write (data and next offset together)
// per fetch. owned_at is refreshed while the copy is caught up (it mirrors
// the log then, tombstones included), so a standby that falls far behind is
// rebuilt in full on promotion, as an owned store away as long would be.
//
// A standby never decides, answers a query or writes to Kafka: it is not in
// parts, live, status or queryable, gets no jobs, and its produce refuses.
// The main loop alone starts and stops standbys, and a partition's owner is
// started only after the standby on its folder has stopped and closed the
// store (startPartition): the owner then replays only the tail the standby
// had not read.

// standbyRetry is how long the main loop waits before it restarts a standby
// that stopped on an error.
const standbyRetry = 5 * time.Second

// standbyIdleCheck is how often an idle standby asks the broker for the last
// stable offset (lag metric, owned_at refresh).
const standbyIdleCheck = 2 * time.Second

// standby is one running standby copy.
type standby struct {
	w      *partition
	cancel context.CancelFunc
	exit   chan struct{}
	// offset is the store's next changelog offset (JoinGroup's warm offsets).
	offset atomic.Int64
	err    error // why it stopped (set before exit closes)
}

// warmStore is a store this instance has and can vouch for: its next offset
// and when it last mirrored the changelog.
type warmStore struct {
	offset  int64
	ownedAt time.Time
}

// onStandbys receives this member's standby partitions of a generation (the
// group goroutine, from SyncGroup); the main loop applies them.
func (p *Processor) onStandbys(ps []int32) {
	ps = slices.Clone(ps)
	p.standbyWant.Store(&ps)
}

// warmOffsets is what this member advertises in JoinGroup (the group
// goroutine): its standby copies and the stores of partitions it stopped
// owning, except stores older than the stale-store rule allows.
func (p *Processor) warmOffsets() map[int32]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int32]int64, len(p.released)+len(p.standbys))
	limit := time.Duration(float64(p.lay.deleteRetention) * StaleStoreFraction)
	for n, s := range p.released {
		if s.offset > 0 && time.Since(s.ownedAt) < limit {
			out[n] = s.offset
		}
	}
	for n, s := range p.standbys {
		if o := s.offset.Load(); o > 0 {
			out[n] = o
		}
	}
	return out
}

// reconcileStandbys (main loop) starts the standbys of the latest assignment
// and stops those it no longer has, those this member now owns, and those
// that stopped on an error (restarted after standbyRetry).
func (p *Processor) reconcileStandbys() {
	want := map[int32]bool{}
	if ws := p.standbyWant.Load(); ws != nil && p.cfg.StandbyReplicas > 0 {
		for _, n := range *ws {
			if n >= 0 && n < p.lay.partitions && !p.owns(n) && p.parts[n] == nil {
				want[n] = true
			}
		}
	}
	for n, s := range p.standbys {
		select {
		case <-s.exit:
			p.stopStandby(s)
			if s.err != nil {
				p.standbyFailed[n] = time.Now()
			}
			continue
		default:
		}
		if !want[n] {
			p.stopStandby(s)
		}
	}
	for n := range want {
		if _, ok := p.standbys[n]; ok || time.Since(p.standbyFailed[n]) < standbyRetry {
			continue
		}
		p.startStandby(n)
	}
}

// startStandby starts a standby copy of partition n (main loop).
func (p *Processor) startStandby(n int32) {
	env := *p.env
	env.produce = func(r *kgo.Record, promise func(*kgo.Record, error)) {
		err := fmt.Errorf("standby of partition %d must not write (%s)", n, r.Topic)
		p.log.Error("standby refused a write", "partition", n, "topic", r.Topic)
		promise(r, err)
	}
	env.flush = nil
	cr := *env.changelog
	cr.standby = true
	env.changelog = &cr
	w := newPartition(&env, p.ctx, n)
	w.standby = true
	w.log = w.log.With("standby", true)
	ctx, cancel := context.WithCancel(p.ctx)
	s := &standby{w: w, cancel: cancel, exit: make(chan struct{})}
	p.mu.Lock()
	p.standbys[n] = s
	delete(p.released, n)
	p.mu.Unlock()
	p.metrics.standbys.Set(float64(len(p.standbys)))
	go s.run(ctx, p)
}

// stopStandby stops s and waits until its store is closed (main loop).
func (p *Processor) stopStandby(s *standby) {
	s.cancel()
	<-s.exit
	n := s.w.p
	p.mu.Lock()
	if p.standbys[n] == s {
		delete(p.standbys, n)
		if o := s.offset.Load(); o > 0 && !s.w.ownedAt.IsZero() {
			p.released[n] = warmStore{offset: o, ownedAt: s.w.ownedAt}
		}
	}
	p.mu.Unlock()
	p.metrics.standbys.Set(float64(len(p.standbys)))
	p.metrics.standbyLag.DeleteLabelValues(partLabel(n))
	s.w.log.Info("standby stopped", "instance", p.cfg.InstanceID, "offset", s.offset.Load(), "err", s.err)
}

// stopStandbys stops every standby (end of a session).
func (p *Processor) stopStandbys() {
	for _, s := range p.standbys {
		p.stopStandby(s)
	}
}

// run restores the standby's store and tails the changelog until ctx ends.
func (s *standby) run(ctx context.Context, p *Processor) {
	w := s.w
	defer close(s.exit)
	defer func() {
		if w.store != nil {
			if !w.ownedAt.IsZero() {
				markReleased(w.store.Dir())
			}
			if err := w.store.Close(); err != nil {
				w.log.Warn("close standby state", "err", err)
			}
		}
	}()
	if _, err := w.restoreWith(ctx, nil); err != nil {
		if ctx.Err() == nil {
			s.err = err
			w.log.Warn("standby restore failed", "err", err)
		}
		return
	}
	s.offset.Store(w.offset)
	w.log.Info("standby running", "instance", p.cfg.InstanceID, "role", p.role.name(), "offset", w.offset)
	if err := s.tail(ctx, p); err != nil && ctx.Err() == nil {
		s.err = err
		w.log.Warn("standby tailing failed", "err", err)
	}
}

// tail reads the changelog from the store's offset, read_committed, and
// writes every fetch to the store with the offset it reaches, in one write.
func (s *standby) tail(ctx context.Context, p *Processor) error {
	w := s.w
	env := w.env
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(env.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{env.io.Changelog: {w.p: kgo.NewOffset().At(w.offset)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // markers move the offset on, so a caught-up copy has lag 0
		// The log start passing the copy's offset (records deleted before it
		// read them) is an error, never a silent jump: the restart's restore
		// then rebuilds the copy in full, as for an owned store.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
	}, env.cfg.KafkaOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("standby client: %w", err)
	}
	defer cl.Close()
	lag := p.metrics.standbyLag.WithLabelValues(partLabel(w.p))
	var checked time.Time
	chunk := make(map[string][]byte)
	for {
		pctx, cancel := context.WithTimeout(ctx, standbyIdleCheck)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && ferr == nil {
				ferr = err
			}
		})
		if ferr != nil {
			return fmt.Errorf("read changelog partition %d: %w", w.p, ferr)
		}
		next, stable, n := w.offset, int64(-1), 0
		fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
			for _, r := range ftp.Records {
				if r.Offset < next {
					continue
				}
				if !r.Attrs.IsControl() {
					chunk[string(r.Key)] = r.Value
					n++
				}
				next = r.Offset + 1
			}
			if len(ftp.Records) > 0 {
				stable = ftp.LastStableOffset
				if stable < 0 {
					stable = ftp.HighWatermark
				}
			}
		})
		if next > w.offset {
			if err := w.store.Commit(chunk, next); err != nil {
				return err
			}
			clear(chunk)
			w.offset, w.stored = next, next
			s.offset.Store(next)
			p.metrics.standbyRecords.Add(float64(n))
		}
		if stable < 0 && time.Since(checked) >= standbyIdleCheck {
			// Idle: ask the broker how far the log is, so that the lag and
			// owned_at stay current without traffic.
			checked = time.Now()
			_, st, _, err := env.changelog.stableBounds(ctx, w.p)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				w.log.Debug("standby: last stable offset not known", "err", err)
				continue
			}
			stable = st
		}
		if stable < 0 {
			continue
		}
		behind := max(0, stable-w.offset)
		lag.Set(float64(behind))
		if behind == 0 && time.Since(w.ownedAt) > ownedAtRefresh {
			// Caught up: the store mirrors the log now, as an owner's does
			// after a commit (tombstones written from here on are ahead).
			if err := w.markOwned(time.Now()); err != nil {
				return err
			}
		}
	}
}

// scanWarmStores (start of a session, with standbys) reads the offset of the
// stores this instance has on disk and does not run, so that a restarted
// instance advertises them in its first JoinGroup: the balancer then prefers
// it as a standby of those partitions. Stores that are unreadable, of another
// changelog topic, marked to be wiped or stale by the stale-store rule are
// left out (they would be rebuilt in full anyway).
func (p *Processor) scanWarmStores() {
	if p.cfg.StandbyReplicas == 0 {
		return
	}
	prefix := p.io.Changelog + "-"
	entries, err := os.ReadDir(p.cfg.StateDir)
	if err != nil {
		return
	}
	limit := time.Duration(float64(p.lay.deleteRetention) * StaleStoreFraction)
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		n64, err := strconv.ParseInt(strings.TrimPrefix(e.Name(), prefix), 10, 32)
		n := int32(n64)
		if err != nil || n < 0 || n >= p.lay.partitions || p.parts[n] != nil || p.standbys[n] != nil {
			continue
		}
		dir := StateDir(p.cfg.StateDir, p.io.Changelog, n)
		if wipeMarked(dir) {
			continue
		}
		ws, ok := readWarmStore(dir, p.lay.changelogID)
		if !ok || time.Since(ws.ownedAt) >= limit {
			continue
		}
		p.mu.Lock()
		p.released[n] = ws
		p.mu.Unlock()
	}
}

// readWarmStore returns the offset and owned_at of the store in dir, if it is
// readable and mirrors the changelog topic id.
func readWarmStore(dir string, topicID []byte) (warmStore, bool) {
	s, err := statestore.Open(dir, statestore.Options{})
	if err != nil {
		return warmStore{}, false
	}
	defer func() { _ = s.Close() }()
	off, err := s.Offset()
	if err != nil || off <= 0 {
		return warmStore{}, false
	}
	tid, err := s.Meta(statestore.MetaTopicID)
	if err != nil || !bytes.Equal(tid, topicID) {
		return warmStore{}, false
	}
	at, ok, err := s.OwnedAt()
	if err != nil || !ok {
		return warmStore{}, false
	}
	return warmStore{offset: off, ownedAt: at}, true
}
