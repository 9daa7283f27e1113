package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// BinaryCheck is the invariant check after the binary runs: the changelog and
// the results topic, each read read_committed from its start to its last
// stable offsets once the processor has stopped.
type BinaryCheck struct {
	// CommandIDs decided (with a command/ record in the changelog), Results
	// read (with a command_id header), SKUs with a stock entity, Active
	// reservations at the end.
	CommandIDs int `json:"command_ids"`
	Results    int `json:"results"`
	SKUs       int `json:"skus"`
	Active     int `json:"active"`
	// OversoldSKUs: reserved > on_hand; MismatchedSKUs: reserved != the sum of
	// the SKU's active reservations.
	OversoldSKUs   int `json:"oversold_skus"`
	MismatchedSKUs int `json:"mismatched_skus"`
	// DecidedTwice: command ids with more than one command/ record or more than
	// one non-duplicate result. Unmatched: a decision without its result or a
	// result without its decision (both are written in one transaction).
	// Unknown: decided command ids that no plan of the run sent.
	// Undecodable: changelog or result records that do not decode.
	DecidedTwice int `json:"decided_twice"`
	Unmatched    int `json:"unmatched"`
	Unknown      int `json:"unknown"`
	Undecodable  int `json:"undecodable"`
	// Examples are the first few violations, for the report.
	Examples []string `json:"examples,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// Violations is the count of broken invariants.
func (c *BinaryCheck) Violations() int {
	return c.OversoldSKUs + c.MismatchedSKUs + c.DecidedTwice + c.Unmatched + c.Unknown + c.Undecodable
}

// verdict is nil when the check ran and found nothing wrong.
func (c *BinaryCheck) verdict() error {
	switch {
	case c.Error != "":
		return fmt.Errorf("binary invariant check failed to run: %s", c.Error)
	case c.CommandIDs == 0 || c.SKUs == 0:
		return fmt.Errorf("binary invariant check saw nothing (%d command ids, %d SKUs)", c.CommandIDs, c.SKUs)
	case c.Violations() > 0:
		return fmt.Errorf("binary invariant check: %d violations (%d oversold, %d reserved != sum(active), %d decided twice, "+
			"%d decisions and results unmatched, %d unknown ids, %d undecodable): %s",
			c.Violations(), c.OversoldSKUs, c.MismatchedSKUs, c.DecidedTwice, c.Unmatched, c.Unknown, c.Undecodable,
			strings.Join(c.Examples, "; "))
	}
	return nil
}

// binChecker accumulates the changelog and the results of a binary run.
type binChecker struct {
	tags        map[string]bool   // the tags of the run's plans (command ids are tag.N)
	latest      map[string][]byte // the latest raw value of each stock and reservation key
	state       processor.Entities
	commands    map[string]int // command/ records per command id
	decisions   map[string]int // non-duplicate results per command id
	results     int
	undecodable int
	examples    []string
}

func newBinChecker(tags []string) *binChecker {
	c := &binChecker{tags: map[string]bool{}, latest: map[string][]byte{}, state: processor.Entities{}, commands: map[string]int{}, decisions: map[string]int{}}
	for _, t := range tags {
		c.tags[t] = true
	}
	return c
}

func (c *binChecker) example(format string, args ...any) {
	if len(c.examples) < 5 {
		c.examples = append(c.examples, fmt.Sprintf(format, args...))
	}
}

// changelog applies one changelog record (a nil value is a tombstone). A
// command/ record is counted by its key; stock and reservation values are
// kept raw and only the latest of each key is decoded, in verdict.
func (c *binChecker) changelog(key string, value []byte) {
	if id, ok := strings.CutPrefix(key, schemas.CommandPrefix); ok {
		if value != nil {
			c.commands[id]++
		}
		return
	}
	if value == nil {
		delete(c.latest, key)
		return
	}
	c.latest[key] = value
}

// decodeLatest decodes the latest value of every stock and reservation key.
func (c *binChecker) decodeLatest() {
	for key, value := range c.latest {
		ch, err := processor.DecodeChange(key, value)
		if err != nil {
			c.undecodable++
			c.example("changelog %s: %v", key, err)
			continue
		}
		c.state[key] = ch
	}
	c.latest = map[string][]byte{}
}

// result counts one result record.
func (c *binChecker) result(r *kgo.Record) {
	id := ""
	for _, h := range r.Headers {
		if h.Key == processor.HeaderCommandID {
			id = string(h.Value)
		}
	}
	if id == "" {
		return // a notice (expiry): no command behind it
	}
	c.results++
	var res struct {
		CommandID string `json:"command_id"`
		Duplicate bool   `json:"duplicate"`
	}
	if err := json.Unmarshal(r.Value, &res); err != nil || res.CommandID != id {
		c.undecodable++
		c.example("result of %s at %d/%d does not decode to its command id", id, r.Partition, r.Offset)
		return
	}
	if !res.Duplicate {
		c.decisions[id]++
	}
}

// known reports whether id is tag.N of one of the run's plans.
func (c *binChecker) known(id string) bool {
	dot := strings.LastIndexByte(id, '.')
	return dot > 0 && c.tags[id[:dot]]
}

// verdict checks what was read.
func (c *binChecker) verdict() BinaryCheck {
	c.decodeLatest()
	v := BinaryCheck{CommandIDs: len(c.commands), Results: c.results, Undecodable: c.undecodable}
	active := map[string]int64{}
	for _, ch := range c.state {
		if rv := ch.Reservation; rv != nil && rv.Reservation.Status == schemas.StatusActive {
			active[rv.Reservation.SKU] += rv.Reservation.Quantity
			v.Active++
		}
	}
	skus := make([]string, 0, len(c.state))
	for _, ch := range c.state {
		if ch.Stock != nil {
			skus = append(skus, ch.Stock.SKU)
		}
	}
	slices.Sort(skus)
	for _, sku := range skus {
		s, _ := c.state.Stock(sku)
		v.SKUs++
		if s.Reserved > s.OnHand {
			v.OversoldSKUs++
			c.example("%s oversold: reserved %d > on_hand %d", sku, s.Reserved, s.OnHand)
		}
		if s.Reserved != active[sku] {
			v.MismatchedSKUs++
			c.example("%s: reserved %d, active reservations hold %d", sku, s.Reserved, active[sku])
		}
		delete(active, sku)
	}
	for sku, q := range active {
		v.MismatchedSKUs++
		c.example("%s: active reservations hold %d, no stock entity", sku, q)
	}
	ids := make([]string, 0, len(c.commands)+len(c.decisions))
	for id := range c.commands {
		ids = append(ids, id)
	}
	for id := range c.decisions {
		if _, ok := c.commands[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		n, d := c.commands[id], c.decisions[id]
		switch {
		case n > 1 || d > 1:
			v.DecidedTwice++
			c.example("command %s: %d command/ records, %d decisions", id, n, d)
		case n != d:
			v.Unmatched++
			c.example("command %s: %d command/ records, %d decisions", id, n, d)
		}
		if !c.known(id) {
			v.Unknown++
			c.example("command %s was decided but no plan of the run sent it", id)
		}
	}
	v.Examples = c.examples
	return v
}

// checkBinary reads the changelog and results topics (once the processor has
// stopped) and checks them against the run's tags.
func checkBinary(ctx context.Context, brokers []string, changelog, results string, tags []string) BinaryCheck {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c := newBinChecker(tags)
	err := readCommitted(ctx, brokers, changelog, func(r *kgo.Record) { c.changelog(string(r.Key), r.Value) })
	if err == nil {
		err = readCommitted(ctx, brokers, results, c.result)
	}
	if err != nil {
		return BinaryCheck{Error: err.Error()}
	}
	return c.verdict()
}

// readCommitted hands every data record of topic, read read_committed from
// its start to its last stable offsets, to fn.
func readCommitted(ctx context.Context, brokers []string, topic string, fn func(*kgo.Record)) error {
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	ends, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, topic)
	adm.Close()
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("last stable offsets of %s: %w", topic, err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords(), kgo.FetchMaxWait(time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	next := map[int32]int64{}
	done := func() bool {
		for p, end := range want {
			if next[p] < end {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: at %v of %v: %w", topic, next, want, err)
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && ferr == nil {
				ferr = fmt.Errorf("fetch %s/%d: %w", topic, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() || r.Offset >= want[r.Partition] {
				return
			}
			fn(r)
		})
	}
	return nil
}
