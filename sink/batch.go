package sink

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/reservations/reservations/schemas"
)

// batch folds changelog records into what one transaction writes: per entity,
// whether the row is deleted first (a tombstone was seen) and the put with the
// highest version after the last tombstone. Applying the fold with the version
// guard gives the same rows as applying the records one by one.
type batch struct {
	stock        map[string]stockOp       // by SKU
	reservations map[string]reservationOp // by changelog key
	next         map[int32]int64          // next offset per partition
	bad          []badRecord
	records      int      // records folded or skipped, of every kind
	kinds        [3]int64 // records folded per kind, indexed by kind*
}

// Kinds of changelog record, as counted in the consumed metric.
const (
	kindStock = iota
	kindReservation
	kindIgnored
)

var kindNames = [...]string{"stock", "reservation", "ignored"}

// stockOp is what a batch does to one stock row.
type stockOp struct {
	del bool      // delete the stored row before the put
	put *stockRow // nil: no put after the last tombstone
}

// reservationOp is what a batch does to one reservation row.
type reservationOp struct {
	del bool
	put *reservationRow
}

type stockRow struct {
	sku               string
	onHand            int64
	reserved          int64
	available         int64
	lowStockThreshold *int64
	version           int64
	event             string
	commandID         string
	updatedAt         schemas.Millis
}

type reservationRow struct {
	key           string
	sku           string
	reservationID string
	quantity      int64
	status        string
	expiresAt     schemas.Millis
	extensions    int64
	cartID        string
	orderID       string
	storeID       string
	prepared      bool // extension: prepared for a cart commit
	version       int64
	event         string
	commandID     string
	updatedAt     schemas.Millis
}

// badRecord is a changelog record that cannot be decoded.
type badRecord struct {
	partition int32
	offset    int64
	key       string // made storable: valid UTF-8, no NUL
	value     []byte
	err       error
}

func newBatch() *batch {
	return &batch{
		stock:        make(map[string]stockOp),
		reservations: make(map[string]reservationOp),
		next:         make(map[int32]int64),
	}
}

func (b *batch) reset() {
	clear(b.stock)
	clear(b.reservations)
	clear(b.next)
	b.bad = b.bad[:0]
	b.records = 0
	b.kinds = [3]int64{}
}

// skip moves past a record that carries no entity: a transaction marker.
func (b *batch) skip(partition int32, offset int64) {
	b.records++
	b.next[partition] = offset + 1
}

// add folds one record. A nil value is a tombstone.
func (b *batch) add(partition int32, offset int64, key, value []byte) {
	b.records++
	b.next[partition] = offset + 1
	k := string(key)
	switch schemas.KeyKind(k) {
	case schemas.StockPrefix:
		b.kinds[kindStock]++
		sku := k[len(schemas.StockPrefix):]
		if err := storableKey(k); err != nil {
			b.addBad(partition, offset, k, value, err)
			return
		}
		if value == nil {
			b.stock[sku] = stockOp{del: true}
			return
		}
		row, err := decodeStock(sku, value)
		if err != nil {
			b.addBad(partition, offset, k, value, err)
			return
		}
		op := b.stock[sku]
		if op.put == nil || row.version > op.put.version {
			op.put = row
		}
		b.stock[sku] = op
	case schemas.ReservationPrefix:
		b.kinds[kindReservation]++
		if err := storableKey(k); err != nil {
			b.addBad(partition, offset, k, value, err)
			return
		}
		if value == nil {
			b.reservations[k] = reservationOp{del: true}
			return
		}
		row, err := decodeReservation(k, value)
		if err != nil {
			b.addBad(partition, offset, k, value, err)
			return
		}
		op := b.reservations[k]
		if op.put == nil || row.version > op.put.version {
			op.put = row
		}
		b.reservations[k] = op
	default:
		// command/<id> idempotency records and prefixes of later contract
		// versions are not part of the snapshot.
		b.kinds[kindIgnored]++
	}
}

func (b *batch) addBad(partition int32, offset int64, key string, value []byte, err error) {
	key = strings.ToValidUTF8(strings.ReplaceAll(key, "\x00", `\x00`), "\uFFFD")
	b.bad = append(b.bad, badRecord{partition: partition, offset: offset, key: key, value: value, err: err})
}

var errNUL = errors.New("text contains a NUL character, which Postgres cannot store")

// storableKey rejects keys Postgres text cannot hold.
func storableKey(k string) error {
	if !utf8.ValidString(k) {
		return errors.New("key is not valid UTF-8")
	}
	if strings.IndexByte(k, 0) >= 0 {
		return fmt.Errorf("key: %w", errNUL)
	}
	return nil
}

// decodeStock reads the value of stock/<sku> with the changelog decoder
// (schemas.DecodeChange) into the row the sink writes.
func decodeStock(sku string, value []byte) (*stockRow, error) {
	c, err := schemas.DecodeChange(schemas.StockKey(sku), value)
	if err != nil {
		return nil, err
	}
	e := c.Stock
	if e == nil {
		return nil, fmt.Errorf("decode changelog key %q: a tombstone, not an entity", schemas.StockKey(sku))
	}
	if hasNUL(e.Event, e.CommandID) {
		return nil, fmt.Errorf("stock entity: %w", errNUL)
	}
	return &stockRow{
		sku: sku, onHand: e.OnHand, reserved: e.Reserved, available: e.Available,
		lowStockThreshold: e.LowStockThreshold, version: e.Version, event: e.Event,
		commandID: e.CommandID, updatedAt: e.UpdatedAt,
	}, nil
}

// decodeReservation reads the value of reservation key with the changelog
// decoder (schemas.DecodeChange) into the row the sink writes.
func decodeReservation(key string, value []byte) (*reservationRow, error) {
	c, err := schemas.DecodeChange(key, value)
	if err != nil {
		return nil, err
	}
	e := c.Reservation
	if e == nil {
		return nil, fmt.Errorf("decode changelog key %q: a tombstone, not an entity", key)
	}
	r := &e.Reservation
	if hasNUL(r.Status, r.CartID, r.OrderID, r.StoreID, e.Event, e.CommandID) {
		return nil, fmt.Errorf("reservation entity: %w", errNUL)
	}
	return &reservationRow{
		key: key, sku: r.SKU, reservationID: r.ReservationID, quantity: r.Quantity,
		status: r.Status, expiresAt: r.ExpiresAt, extensions: r.Extensions, cartID: r.CartID,
		orderID: r.OrderID, storeID: r.StoreID, prepared: r.Prepared, version: e.Version, event: e.Event,
		commandID: e.CommandID, updatedAt: e.UpdatedAt,
	}, nil
}

func hasNUL(ss ...string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}

// timeOrNil converts a contract time to a timestamptz parameter (NULL if unset).
func timeOrNil(m schemas.Millis) any {
	if m == 0 {
		return nil
	}
	return m.Time()
}
