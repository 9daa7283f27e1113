package schemas

// Outcomes of a result.
const (
	OutcomeAccepted = "accepted"
	OutcomeRejected = "rejected"
)

// Reason codes of rejected results.
const (
	ReasonInsufficientStock    = "insufficient_stock"
	ReasonUnknownSKU           = "unknown_sku"
	ReasonUnknownReservation   = "unknown_reservation"
	ReasonReservationExists    = "reservation_exists"
	ReasonReservationNotActive = "reservation_not_active"
	ReasonExtensionLimit       = "extension_limit"
	ReasonStaleExpectedOnHand  = "stale_expected_on_hand"
	ReasonNegativeStock        = "negative_stock"
	ReasonInvalidCommand       = "invalid_command"
	ReasonSKUMismatch          = "sku_mismatch"
	// ReasonReservationPrepared (extension): the reservation is prepared for a
	// cart commit; only commit and unprepare are accepted until then.
	ReasonReservationPrepared = "reservation_prepared"
)

// Reasons lists every reason code (bounded: safe as a metric label).
var Reasons = []string{
	ReasonInsufficientStock, ReasonUnknownSKU, ReasonUnknownReservation, ReasonReservationExists,
	ReasonReservationNotActive, ReasonExtensionLimit, ReasonStaleExpectedOnHand, ReasonNegativeStock,
	ReasonInvalidCommand, ReasonSKUMismatch, ReasonReservationPrepared,
}

// Reservation statuses.
const (
	StatusActive   = "active"
	StatusReleased = "released"
	StatusExpired  = "expired"
	StatusConsumed = "consumed"
)

// StockView is the stock figures carried by results.
type StockView struct {
	OnHand    int64 `json:"on_hand"`
	Reserved  int64 `json:"reserved"`
	Available int64 `json:"available"`
}

// Reservation is a hold of stock for a cart, as carried by results and the changelog.
type Reservation struct {
	ReservationID string `json:"reservation_id"`
	SKU           string `json:"sku"`
	Quantity      int64  `json:"quantity"`
	Status        string `json:"status"`
	ExpiresAt     Millis `json:"expires_at"`
	Extensions    int64  `json:"extensions"`
	CartID        string `json:"cart_id"`
	OrderID       string `json:"order_id"`
	// StoreID is an extension of contract v1 (see schemas/README.md).
	StoreID string `json:"store_id,omitempty"`
	// Prepared (extension) marks an active reservation prepared for a cart
	// commit: it does not expire, and only commit and unprepare change it.
	Prepared bool `json:"prepared,omitempty"`
}

// Result is one record of the results topic: the decision on one command, or a
// notice (expired, low_stock) with an empty command_id.
type Result struct {
	CommandID     string       `json:"command_id"`
	Type          string       `json:"type"`
	SKU           string       `json:"sku"`
	ReservationID string       `json:"reservation_id"`
	Outcome       string       `json:"outcome"`
	Duplicate     bool         `json:"duplicate"`
	Reason        string       `json:"reason"`
	Message       string       `json:"message"`
	Stock         *StockView   `json:"stock"`
	Reservation   *Reservation `json:"reservation"`
	Partition     int32        `json:"partition"`
	Offset        int64        `json:"offset"`
	DecidedAt     Millis       `json:"decided_at"`
}
