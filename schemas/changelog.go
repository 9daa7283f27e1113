package schemas

import "strings"

// Changelog events.
const (
	EventStockSet      = "stock_set"
	EventStockAdjusted = "stock_adjusted"
	EventReserved      = "reserved"
	EventAdjusted      = "adjusted"
	EventReleased      = "released"
	EventExtended      = "extended"
	EventCommitted     = "committed"
	EventExpired       = "expired"
	EventLowStock      = "low_stock"
	// EventPrepared and EventUnprepared are extensions (cart commit phases).
	EventPrepared   = "prepared"
	EventUnprepared = "unprepared"
	// EventDecided marks a command/<command_id> entry (extension, see schemas/README.md).
	EventDecided = "decided"
)

// Changelog key prefixes. The command/ prefix is an extension of contract v1:
// consumers that only know stock/ and reservation/ must ignore other prefixes.
const (
	StockPrefix       = "stock/"
	ReservationPrefix = "reservation/"
	CommandPrefix     = "command/"
)

// StockKey is the changelog key of a SKU's stock entity.
func StockKey(sku string) string { return StockPrefix + sku }

// ReservationKey is the changelog key of a reservation entity. A SKU may contain
// '/', so '%' and '/' in the reservation id are percent-escaped ("%25", "%2F")
// to keep keys unique: ("a/b", "c") and ("a", "b/c") must not share a key. Ids
// without those characters (the usual case) appear unchanged.
func ReservationKey(sku, reservationID string) string {
	if strings.ContainsAny(reservationID, "%/") {
		reservationID = keyEscaper.Replace(reservationID)
	}
	return ReservationPrefix + sku + "/" + reservationID
}

var keyEscaper = strings.NewReplacer("%", "%25", "/", "%2F")

// CommandKey is the changelog key of a decided command (the idempotency record).
func CommandKey(commandID string) string { return CommandPrefix + commandID }

// keyPrefixes are the prefixes of every changelog key kind: the SKU
// processor's (stock/, reservation/, command/) and the cart coordinator's
// (cart/, cart-command/: extension (k), on the cart-changelog topic).
var keyPrefixes = [...]string{StockPrefix, ReservationPrefix, CommandPrefix, CartPrefix, CartCommandPrefix}

// KeyKind returns the prefix of a changelog key (one of keyPrefixes), or ""
// for a key of an unknown kind.
func KeyKind(key string) string {
	for _, p := range keyPrefixes {
		if strings.HasPrefix(key, p) {
			return p
		}
	}
	return ""
}

// StockEntity is the changelog value under stock/<sku>.
type StockEntity struct {
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
	// LowStockThreshold is null when no threshold is set.
	LowStockThreshold *int64 `json:"low_stock_threshold"`
	Version           int64  `json:"version"`
	Event             string `json:"event"`
	CommandID         string `json:"command_id"`
	UpdatedAt         Millis `json:"updated_at"`
}

// View returns the stock figures of s.
func (s *StockEntity) View() *StockView {
	return &StockView{OnHand: s.OnHand, Reserved: s.Reserved, Available: s.OnHand - s.Reserved}
}

// ReservationEntity is the changelog value under reservation/<sku>/<reservation_id>.
type ReservationEntity struct {
	Reservation Reservation `json:"reservation"`
	Version     int64       `json:"version"`
	Event       string      `json:"event"`
	CommandID   string      `json:"command_id"`
	UpdatedAt   Millis      `json:"updated_at"`
}

// CommandEntity is the changelog value under command/<command_id> (extension):
// the original result of a decided command, kept for the dedupe window so that a
// re-sent command_id is answered with it, across restarts and partition moves.
type CommandEntity struct {
	CommandID string `json:"command_id"`
	Result    Result `json:"result"`
	Version   int64  `json:"version"`
	Event     string `json:"event"`
	UpdatedAt Millis `json:"updated_at"`
}
