package sink

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/reservations/reservations/schemas"
)

// Checks of Verify, as named in a Mismatch.
const (
	// CheckDecode: a stock or reservation record whose value cannot be decoded
	// or does not match its key (the sink skips it).
	CheckDecode = "decode"
	// CheckVersion: an entity's versions do not strictly increase (compaction
	// may remove versions, so gaps are allowed).
	CheckVersion = "version"
	// CheckPartition: one key written to two changelog partitions.
	CheckPartition = "partition"
	// CheckStock: on_hand < 0, reserved < 0, or available != on_hand - reserved.
	CheckStock = "stock"
	// CheckOversold: available went below 0 (or further below) through an
	// event other than stock_set or stock_adjusted.
	CheckOversold = "oversold"
	// CheckReserved: a SKU's reserved is not the sum of the quantities of its
	// active reservations (the phantom-reservation reconciliation).
	CheckReserved = "reserved"
	// CheckReservation: an unknown status, a quantity below 1, a consumed
	// reservation without order_id, a prepared reservation (extension) that is
	// not active or names no order.
	CheckReservation = "reservation"
	// CheckTerminal: a released, expired or consumed reservation changed
	// status, quantity or order_id.
	CheckTerminal = "terminal"
	// CheckPostgres: a row differs from the latest changelog entity, is
	// missing, or has no live entity.
	CheckPostgres = "postgres"
	// CheckOffsets: the sink's stored offsets are beyond the changelog end.
	CheckOffsets = "offsets"
)

// Mismatch is one violation found by Verify.
type Mismatch struct {
	Check string // one of the Check* constants
	Key   string // changelog key: stock/<sku> or reservation/<sku>/<id>
	Field string // the field that is wrong, if one is
	// Want is the expected value (the changelog's, or the invariant's), Got
	// the value found; both empty when the mismatch is not about one value.
	Want, Got string
	Detail    string
	// Partition and Offset locate the changelog record, Offset -1 if the
	// mismatch is not about one record.
	Partition int32
	Offset    int64
}

func (m Mismatch) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-11s %s", m.Check, m.Key)
	if m.Field != "" {
		fmt.Fprintf(&b, " %s", m.Field)
	}
	if m.Want != "" || m.Got != "" {
		fmt.Fprintf(&b, ": want %s, got %s", m.Want, m.Got)
	}
	if m.Detail != "" {
		if m.Field != "" || m.Want != "" || m.Got != "" {
			b.WriteString(";")
		} else {
			b.WriteString(":")
		}
		b.WriteString(" " + m.Detail)
	}
	if m.Offset >= 0 {
		fmt.Fprintf(&b, " (partition %d offset %d)", m.Partition, m.Offset)
	}
	return b.String()
}

// maxKept bounds the violations a checker keeps (it counts them all).
const maxKept = 10_000

// checker applies changelog records in offset order, with the sink's rules
// (per key, the highest version since the last tombstone), and checks the
// contract's invariants on the way. It does no I/O.
type checker struct {
	stock map[string]*stockState       // by SKU
	res   map[string]*reservationState // by changelog key
	gone  map[string]bool              // keys whose last record is a tombstone
	owner map[string]int32             // partition of every key seen

	// checkAt is where each partition is reconciled (reserved == sum of
	// active reservations): a transaction boundary. Partitions without an
	// entry are reconciled by finish.
	checkAt    map[int32]int64
	reconciled map[int32]bool

	counts     counts
	violations []Mismatch
	nViolation int
}

type stockState struct {
	row       *stockRow
	partition int32
	offset    int64
}

type reservationState struct {
	row       *reservationRow
	partition int32
	offset    int64
}

// counts are the records a checker read.
type counts struct {
	records      int64 // data records (markers excluded)
	stock        int64
	reservations int64
	commands     int64
	tombstones   int64
	other        int64 // unknown key prefixes
	undecodable  int64
}

func newChecker(checkAt map[int32]int64) *checker {
	return &checker{
		stock: map[string]*stockState{}, res: map[string]*reservationState{}, gone: map[string]bool{},
		owner: map[string]int32{}, checkAt: checkAt, reconciled: map[int32]bool{},
	}
}

func (c *checker) violate(m Mismatch) {
	c.nViolation++
	if len(c.violations) < maxKept {
		c.violations = append(c.violations, m)
	}
}

// add applies one record; a nil value is a tombstone.
func (c *checker) add(partition int32, offset int64, key, value []byte) {
	if at, ok := c.checkAt[partition]; ok && offset >= at && !c.reconciled[partition] {
		c.reconcile(partition)
	}
	c.counts.records++
	k := string(key)
	kind := schemas.KeyKind(k)
	switch kind {
	case schemas.StockPrefix:
		c.counts.stock++
	case schemas.ReservationPrefix:
		c.counts.reservations++
	case schemas.CommandPrefix:
		c.counts.commands++
		if value == nil {
			c.counts.tombstones++
		}
		return
	default:
		c.counts.other++
		return
	}
	at := func(m Mismatch) Mismatch {
		m.Key, m.Partition, m.Offset = k, partition, offset
		return m
	}
	if p, ok := c.owner[k]; ok && p != partition {
		c.violate(at(Mismatch{Check: CheckPartition,
			Detail: fmt.Sprintf("key written to partition %d before, now to partition %d", p, partition)}))
	}
	c.owner[k] = partition
	if err := storableKey(k); err != nil {
		c.counts.undecodable++
		c.violate(at(Mismatch{Check: CheckDecode, Detail: err.Error()}))
		return
	}
	if value == nil {
		c.counts.tombstones++
		if kind == schemas.StockPrefix {
			delete(c.stock, k[len(schemas.StockPrefix):])
		} else {
			delete(c.res, k)
		}
		c.gone[k] = true
		return
	}
	if kind == schemas.StockPrefix {
		c.addStock(k[len(schemas.StockPrefix):], partition, offset, value, at)
	} else {
		c.addReservation(k, partition, offset, value, at)
	}
}

func (c *checker) addStock(sku string, partition int32, offset int64, value []byte, at func(Mismatch) Mismatch) {
	row, err := decodeStock(sku, value)
	if err != nil {
		c.counts.undecodable++
		c.violate(at(Mismatch{Check: CheckDecode, Detail: err.Error()}))
		return
	}
	key := schemas.StockKey(sku)
	prev := c.stock[sku]
	if prev != nil && row.version <= prev.row.version {
		c.violate(at(Mismatch{Check: CheckVersion, Field: "version",
			Want: "> " + itoa(prev.row.version), Got: itoa(row.version),
			Detail: fmt.Sprintf("the previous record (offset %d) has version %d", prev.offset, prev.row.version)}))
		return // the sink keeps the newer version too
	}
	if row.version < 1 {
		c.violate(at(Mismatch{Check: CheckVersion, Field: "version", Want: ">= 1", Got: itoa(row.version)}))
	}
	if row.onHand < 0 {
		c.violate(at(Mismatch{Check: CheckStock, Field: "on_hand", Want: ">= 0", Got: itoa(row.onHand)}))
	}
	if row.reserved < 0 {
		c.violate(at(Mismatch{Check: CheckStock, Field: "reserved", Want: ">= 0", Got: itoa(row.reserved)}))
	}
	if row.available != row.onHand-row.reserved {
		c.violate(at(Mismatch{Check: CheckStock, Field: "available", Want: itoa(row.onHand - row.reserved),
			Got: itoa(row.available), Detail: "available must be on_hand - reserved"}))
	}
	// Only stock.set and stock.adjust may oversell. Judged on consecutive
	// versions only: when compaction removed versions in between, one of
	// them may have been the stock change that oversold the SKU.
	if row.available < 0 && row.event != schemas.EventStockSet && row.event != schemas.EventStockAdjusted {
		switch {
		case prev == nil && row.version == 1:
			c.violate(at(Mismatch{Check: CheckOversold, Field: "available", Want: ">= 0", Got: itoa(row.available),
				Detail: fmt.Sprintf("a new SKU is oversold through event %q", row.event)}))
		case prev != nil && row.version == prev.row.version+1 && prev.row.available >= 0:
			c.violate(at(Mismatch{Check: CheckOversold, Field: "available", Want: ">= 0", Got: itoa(row.available),
				Detail: fmt.Sprintf("available went from %d below 0 through event %q (only stock_set and stock_adjusted may oversell)",
					prev.row.available, row.event)}))
		case prev != nil && row.version == prev.row.version+1 && row.available < prev.row.available:
			c.violate(at(Mismatch{Check: CheckOversold, Field: "available", Want: ">= " + itoa(prev.row.available),
				Got: itoa(row.available), Detail: fmt.Sprintf("an oversold SKU lost more availability through event %q", row.event)}))
		}
	}
	c.stock[sku] = &stockState{row: row, partition: partition, offset: offset}
	delete(c.gone, key)
}

func (c *checker) addReservation(key string, partition int32, offset int64, value []byte, at func(Mismatch) Mismatch) {
	row, err := decodeReservation(key, value)
	if err != nil {
		c.counts.undecodable++
		c.violate(at(Mismatch{Check: CheckDecode, Detail: err.Error()}))
		return
	}
	prev := c.res[key]
	if prev != nil && row.version <= prev.row.version {
		c.violate(at(Mismatch{Check: CheckVersion, Field: "version",
			Want: "> " + itoa(prev.row.version), Got: itoa(row.version),
			Detail: fmt.Sprintf("the previous record (offset %d) has version %d", prev.offset, prev.row.version)}))
		return
	}
	if row.version < 1 {
		c.violate(at(Mismatch{Check: CheckVersion, Field: "version", Want: ">= 1", Got: itoa(row.version)}))
	}
	switch row.status {
	case schemas.StatusActive, schemas.StatusReleased, schemas.StatusExpired, schemas.StatusConsumed:
	default:
		c.violate(at(Mismatch{Check: CheckReservation, Field: "status", Want: "active, released, expired or consumed",
			Got: strconv.Quote(row.status)}))
	}
	if row.quantity < 1 {
		c.violate(at(Mismatch{Check: CheckReservation, Field: "quantity", Want: ">= 1", Got: itoa(row.quantity)}))
	}
	if row.status == schemas.StatusConsumed && row.orderID == "" {
		c.violate(at(Mismatch{Check: CheckReservation, Field: "order_id", Want: "an order id", Got: `""`,
			Detail: "a consumed reservation names its order"}))
	}
	if row.prepared && row.status != schemas.StatusActive {
		c.violate(at(Mismatch{Check: CheckReservation, Field: "prepared", Want: "false", Got: "true",
			Detail: fmt.Sprintf("a %s reservation is no longer prepared (commit and unprepare clear it)", row.status)}))
	}
	if row.prepared && row.orderID == "" {
		c.violate(at(Mismatch{Check: CheckReservation, Field: "order_id", Want: "an order id", Got: `""`,
			Detail: "a prepared reservation names its order"}))
	}
	if prev != nil && terminal(prev.row.status) {
		was := fmt.Sprintf("the reservation was %s at offset %d", prev.row.status, prev.offset)
		if row.status != prev.row.status {
			c.violate(at(Mismatch{Check: CheckTerminal, Field: "status", Want: prev.row.status, Got: row.status, Detail: was}))
		}
		if row.quantity != prev.row.quantity {
			c.violate(at(Mismatch{Check: CheckTerminal, Field: "quantity", Want: itoa(prev.row.quantity),
				Got: itoa(row.quantity), Detail: was}))
		}
		if row.orderID != prev.row.orderID {
			c.violate(at(Mismatch{Check: CheckTerminal, Field: "order_id", Want: strconv.Quote(prev.row.orderID),
				Got: strconv.Quote(row.orderID), Detail: was}))
		}
	}
	c.res[key] = &reservationState{row: row, partition: partition, offset: offset}
	delete(c.gone, key)
}

func terminal(status string) bool {
	return status == schemas.StatusReleased || status == schemas.StatusExpired || status == schemas.StatusConsumed
}

// reconcile checks, for every SKU of partition p, that reserved is the sum of
// the quantities of the SKU's active reservations.
func (c *checker) reconcile(p int32) {
	c.reconciled[p] = true
	type hold struct{ quantity, n int64 }
	held := map[string]hold{}
	for _, r := range c.res {
		if r.partition == p && r.row.status == schemas.StatusActive {
			h := held[r.row.sku]
			h.quantity += r.row.quantity
			h.n++
			held[r.row.sku] = h
		}
	}
	for sku, s := range c.stock {
		if s.partition != p {
			continue
		}
		h := held[sku]
		delete(held, sku)
		if s.row.reserved != h.quantity {
			c.violate(Mismatch{Check: CheckReserved, Key: schemas.StockKey(sku), Field: "reserved",
				Want: itoa(h.quantity), Got: itoa(s.row.reserved), Partition: p, Offset: s.offset,
				Detail: fmt.Sprintf("%d active reservations hold %d", h.n, h.quantity)})
		}
	}
	for sku, h := range held {
		c.violate(Mismatch{Check: CheckReserved, Key: schemas.StockKey(sku), Field: "reserved",
			Want: itoa(h.quantity), Partition: p, Offset: -1,
			Detail: fmt.Sprintf("%d active reservations hold %d, but the SKU has no stock entity", h.n, h.quantity)})
	}
}

// finish reconciles the partitions not yet reconciled.
func (c *checker) finish(partitions []int32) {
	for _, p := range partitions {
		if !c.reconciled[p] {
			c.reconcile(p)
		}
	}
}

// sortedViolations returns the kept violations ordered by key, then offset.
func (c *checker) sortedViolations() []Mismatch {
	out := append([]Mismatch(nil), c.violations...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].Offset < out[j].Offset
	})
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
