package sink

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/reservations/reservations/schemas"
)

// crec is one changelog record for the checker: partition, offset, key, value.
type crec struct {
	p     int32
	off   int64
	key   string
	value []byte
}

// st is a stock record of version v: on_hand, reserved, event; available is
// computed unless avail is given.
func st(sku string, v, onHand, reserved int64, event string, avail ...int64) crec {
	a := onHand - reserved
	if len(avail) > 0 {
		a = avail[0]
	}
	b, err := json.Marshal(schemas.StockEntity{SKU: sku, OnHand: onHand, Reserved: reserved, Available: a,
		Version: v, Event: event, CommandID: fmt.Sprintf("c-%d", v), UpdatedAt: epoch})
	if err != nil {
		panic(err)
	}
	return crec{key: schemas.StockKey(sku), value: b}
}

// rs is a reservation record of version v.
func rs(sku, id string, v, qty int64, status, event, order string) crec {
	b, err := json.Marshal(schemas.ReservationEntity{Reservation: schemas.Reservation{ReservationID: id, SKU: sku,
		Quantity: qty, Status: status, ExpiresAt: epoch + 900_000, OrderID: order}, Version: v, Event: event,
		UpdatedAt: epoch})
	if err != nil {
		panic(err)
	}
	return crec{key: schemas.ReservationKey(sku, id), value: b}
}

// prepared is r (a reservation record) prepared for a cart commit (extension).
func prepared(r crec) crec {
	var e schemas.ReservationEntity
	if err := json.Unmarshal(r.value, &e); err != nil {
		panic(err)
	}
	e.Reservation.Prepared = true
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	r.value = b
	return r
}

func tomb(key string) crec { return crec{key: key} }

// want is an expected violation: check and key (and field when not empty).
type want struct{ check, key, field string }

// runChecker feeds recs (offsets assigned in order per partition unless set)
// and returns the violations.
func runChecker(recs []crec, checkAt map[int32]int64) *checker {
	c := newChecker(checkAt)
	next := map[int32]int64{}
	parts := map[int32]bool{0: true}
	for _, r := range recs {
		if r.off == 0 {
			r.off = next[r.p]
		}
		next[r.p] = r.off + 1
		parts[r.p] = true
		c.add(r.p, r.off, []byte(r.key), r.value)
	}
	var ps []int32
	for p := range parts {
		ps = append(ps, p)
	}
	c.finish(ps)
	return c
}

const (
	active   = schemas.StatusActive
	released = schemas.StatusReleased
	consumed = schemas.StatusConsumed
	expired  = schemas.StatusExpired
)

func TestChecker(t *testing.T) {
	for _, tc := range []struct {
		name    string
		recs    []crec
		checkAt map[int32]int64
		want    []want
	}{
		{
			name: "clean life of a SKU",
			recs: []crec{
				st("A", 1, 10, 0, schemas.EventStockSet),
				st("A", 2, 10, 3, schemas.EventReserved), rs("A", "r1", 1, 3, active, schemas.EventReserved, ""),
				st("A", 3, 7, 0, schemas.EventCommitted), rs("A", "r1", 2, 3, consumed, schemas.EventCommitted, "o-1"),
				st("A", 4, 7, 5, schemas.EventReserved), rs("A", "r2", 1, 5, active, schemas.EventReserved, ""),
				// oversold by stock.set, then a low_stock record with the same figures
				st("A", 5, 1, 5, schemas.EventStockSet), st("A", 6, 1, 5, schemas.EventLowStock),
				// a release improves it
				st("A", 7, 1, 0, schemas.EventReleased), rs("A", "r2", 2, 5, released, schemas.EventReleased, ""),
				tomb(schemas.ReservationKey("A", "r1")),
				// re-created after its tombstone
				st("A", 8, 1, 1, schemas.EventReserved), rs("A", "r1", 1, 1, active, schemas.EventReserved, ""),
				st("A", 9, 1, 0, schemas.EventExpired), rs("A", "r1", 2, 1, expired, schemas.EventExpired, ""),
				{key: schemas.CommandKey("c-1"), value: []byte(`{"command_id":"c-1","version":1}`)},
				{key: "future/x", value: []byte(`{}`)},
				// stock adjust may oversell too
				st("B", 1, 4, 0, schemas.EventStockSet), st("B", 2, 4, 4, schemas.EventReserved),
				rs("B", "r", 1, 4, active, schemas.EventReserved, ""), st("B", 3, 2, 4, schemas.EventStockAdjusted),
			},
		},
		{
			name: "prepared hold (extension): counts in reserved, unprepared, prepared again, committed",
			recs: []crec{
				st("A", 1, 10, 0, schemas.EventStockSet),
				st("A", 2, 10, 3, schemas.EventReserved), rs("A", "r1", 1, 3, active, schemas.EventReserved, ""),
				prepared(rs("A", "r1", 2, 3, active, schemas.EventPrepared, "o-1")),
				rs("A", "r1", 3, 3, active, schemas.EventUnprepared, ""),
				prepared(rs("A", "r1", 4, 3, active, schemas.EventPrepared, "o-2")),
				st("A", 3, 7, 0, schemas.EventCommitted), rs("A", "r1", 5, 3, consumed, schemas.EventCommitted, "o-3"),
			},
		},
		{
			name: "prepared but terminal, prepared without order",
			recs: []crec{
				st("A", 1, 10, 3, schemas.EventStockSet),
				prepared(rs("A", "r1", 1, 2, released, schemas.EventReleased, "o-1")),
				prepared(rs("A", "r2", 1, 3, active, schemas.EventPrepared, "")),
			},
			want: []want{{CheckReservation, "reservation/A/r1", "prepared"}, {CheckReservation, "reservation/A/r2", "order_id"}},
		},
		{
			name: "phantom reservation: reserved above the active holds",
			recs: []crec{st("A", 1, 10, 0, schemas.EventStockSet), st("A", 2, 10, 3, schemas.EventReserved)},
			want: []want{{CheckReserved, "stock/A", "reserved"}},
		},
		{
			name: "hold not counted in reserved",
			recs: []crec{st("A", 1, 10, 0, schemas.EventStockSet), rs("A", "r1", 1, 3, active, schemas.EventReserved, "")},
			want: []want{{CheckReserved, "stock/A", "reserved"}},
		},
		{
			name: "active reservation of a SKU without stock",
			recs: []crec{rs("A", "r1", 1, 3, active, schemas.EventReserved, "")},
			want: []want{{CheckReserved, "stock/A", "reserved"}},
		},
		{
			name: "available is not on_hand - reserved",
			recs: []crec{st("A", 1, 10, 0, schemas.EventStockSet, 9)},
			want: []want{{CheckStock, "stock/A", "available"}},
		},
		{
			name: "negative on_hand",
			recs: []crec{st("A", 1, -1, 0, schemas.EventStockSet)},
			want: []want{{CheckStock, "stock/A", "on_hand"}},
		},
		{
			name: "oversold by a reserve",
			recs: []crec{
				st("A", 1, 5, 0, schemas.EventStockSet),
				st("A", 2, 5, 6, schemas.EventReserved), rs("A", "r1", 1, 6, active, schemas.EventReserved, ""),
			},
			want: []want{{CheckOversold, "stock/A", "available"}},
		},
		{
			name: "an oversold SKU loses more through an adjust",
			recs: []crec{
				st("A", 1, 5, 0, schemas.EventStockSet),
				st("A", 2, 5, 4, schemas.EventReserved), rs("A", "r1", 1, 4, active, schemas.EventReserved, ""),
				st("A", 3, 2, 4, schemas.EventStockSet),
				st("A", 4, 2, 5, schemas.EventAdjusted), rs("A", "r1", 2, 5, active, schemas.EventAdjusted, ""),
			},
			want: []want{{CheckOversold, "stock/A", "available"}},
		},
		{
			name: "oversold across a version gap is not judged (compaction)",
			recs: []crec{
				st("A", 1, 5, 0, schemas.EventStockSet),
				st("A", 3, 5, 6, schemas.EventReserved), rs("A", "r1", 1, 6, active, schemas.EventReserved, ""),
			},
		},
		{
			name: "versions must increase",
			recs: []crec{
				st("A", 2, 5, 0, schemas.EventStockSet), st("A", 1, 5, 0, schemas.EventStockSet),
				rs("A", "r", 1, 1, released, schemas.EventReleased, ""), rs("A", "r", 1, 1, released, schemas.EventReleased, ""),
			},
			want: []want{{CheckVersion, "stock/A", "version"}, {CheckVersion, "reservation/A/r", "version"}},
		},
		{
			name: "a released reservation becomes active again",
			recs: []crec{
				st("A", 1, 5, 0, schemas.EventStockSet),
				rs("A", "r", 1, 2, released, schemas.EventReleased, ""), rs("A", "r", 2, 2, active, schemas.EventAdjusted, ""),
				st("A", 2, 5, 2, schemas.EventAdjusted),
			},
			want: []want{{CheckTerminal, "reservation/A/r", "status"}},
		},
		{
			name: "a consumed reservation changes quantity and order",
			recs: []crec{
				st("A", 1, 5, 0, schemas.EventStockSet),
				rs("A", "r", 1, 2, consumed, schemas.EventCommitted, "o-1"),
				rs("A", "r", 2, 3, consumed, schemas.EventCommitted, "o-2"),
			},
			want: []want{{CheckTerminal, "reservation/A/r", "quantity"}, {CheckTerminal, "reservation/A/r", "order_id"}},
		},
		{
			name: "consumed without order, quantity 0, unknown status",
			recs: []crec{
				st("A", 1, 5, 0, schemas.EventStockSet),
				rs("A", "r1", 1, 2, consumed, schemas.EventCommitted, ""),
				rs("A", "r2", 1, 0, released, schemas.EventReleased, ""),
				rs("A", "r3", 1, 1, "held", schemas.EventReleased, ""),
			},
			want: []want{{CheckReservation, "reservation/A/r1", "order_id"}, {CheckReservation, "reservation/A/r2", "quantity"},
				{CheckReservation, "reservation/A/r3", "status"}},
		},
		{
			name: "undecodable values and keys that do not match",
			recs: []crec{
				{key: "stock/A", value: []byte(`{"sku":`)},
				{key: "stock/A", value: []byte(`{"sku":"B","version":1}`)},
				{key: "reservation/A/r", value: []byte(`{"reservation":{"sku":"A","reservation_id":"x"},"version":1}`)},
			},
			want: []want{{CheckDecode, "stock/A", ""}, {CheckDecode, "stock/A", ""}, {CheckDecode, "reservation/A/r", ""}},
		},
		{
			name: "one key on two partitions",
			recs: []crec{st("A", 1, 5, 0, schemas.EventStockSet), func() crec {
				r := st("A", 2, 5, 0, schemas.EventStockSet)
				r.p = 1
				return r
			}()},
			want: []want{{CheckPartition, "stock/A", ""}},
		},
		{
			name: "reconciled at the transaction boundary, not mid-transaction",
			recs: []crec{
				st("A", 1, 10, 0, schemas.EventStockSet),
				// offset 1 is the commit marker; the next transaction's stock
				// record is read, its reservation record is not.
				func() crec { r := st("A", 2, 10, 3, schemas.EventReserved); r.off = 2; return r }(),
			},
			checkAt: map[int32]int64{0: 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := runChecker(tc.recs, tc.checkAt)
			var got []want
			for _, m := range c.sortedViolations() {
				got = append(got, want{m.Check, m.Key, m.Field})
				assert.NotEmpty(t, m.String())
			}
			assert.ElementsMatch(t, tc.want, got, "violations: %v", c.sortedViolations())
			assert.Equal(t, len(c.violations), c.nViolation)
		})
	}
}

func TestCheckerCounts(t *testing.T) {
	c := runChecker([]crec{
		st("A", 1, 10, 0, schemas.EventStockSet),
		st("A", 2, 10, 3, schemas.EventReserved), rs("A", "r1", 1, 3, active, schemas.EventReserved, ""),
		rs("A", "r0", 1, 1, released, schemas.EventReleased, ""), tomb(schemas.ReservationKey("A", "r0")),
		{key: schemas.CommandKey("c-1"), value: []byte(`{}`)}, tomb(schemas.CommandKey("c-1")),
		{key: "future/x", value: []byte(`{}`)},
	}, nil)
	assert.Empty(t, c.violations)
	assert.Equal(t, counts{records: 8, stock: 2, reservations: 3, commands: 2, tombstones: 2, other: 1}, c.counts)
	assert.Len(t, c.stock, 1)
	assert.Len(t, c.res, 1)
	assert.True(t, c.gone[schemas.ReservationKey("A", "r0")])
}

func TestMismatchString(t *testing.T) {
	m := Mismatch{Check: CheckPostgres, Key: "reservation/A/r1", Field: "quantity", Want: "3", Got: "99", Offset: -1}
	assert.Equal(t, "postgres    reservation/A/r1 quantity: want 3, got 99", m.String())
	m = Mismatch{Check: CheckReserved, Key: "stock/A", Field: "reserved", Want: "3", Got: "5",
		Detail: "1 active reservations hold 3", Partition: 2, Offset: 7}
	assert.Equal(t, "reserved    stock/A reserved: want 3, got 5; 1 active reservations hold 3 (partition 2 offset 7)", m.String())
	m = Mismatch{Check: CheckPostgres, Key: "stock/B", Detail: "row without a changelog entity", Offset: -1}
	assert.Equal(t, "postgres    stock/B: row without a changelog entity", m.String())
}
