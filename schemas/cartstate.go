package schemas

// The cart coordinator's state (extension (k)): the values of its compacted
// changelog, the cart-changelog topic. The coordinator's core (package
// processor/cart) decides with these types; they live here with their
// encoders and the changelog decoder (DecodeChange) so that every changelog
// value is written and read by one codec.

// Changelog key prefixes of the cart coordinator's state.
const (
	CartPrefix        = "cart/"
	CartCommandPrefix = "cart-command/"
)

// CartKey is the cart-changelog key of a cart's entity.
func CartKey(cartID string) string { return CartPrefix + cartID }

// CartCommandKey is the cart-changelog key of a decided cart command (the
// idempotency record).
func CartCommandKey(commandID string) string { return CartCommandPrefix + commandID }

// CartHold is an active reservation of a cart, as the coordinator knows it.
type CartHold struct {
	SKU           string `json:"sku"`
	ReservationID string `json:"reservation_id"`
	Quantity      int64  `json:"quantity"`
	ExpiresAt     Millis `json:"expires_at"`
}

// CartSagaLine is one line of the saga in progress.
type CartSagaLine struct {
	CartLine
	// Pending: the per-SKU command of the current phase awaits its result.
	Pending bool `json:"pending"`
	// Held: the reservation is held by this saga (accepted reserve, or a hold
	// of the cart for commit/release).
	Held bool `json:"held"`
	// Prepared: the hold was prepared by this saga's commit.
	Prepared bool `json:"prepared"`
}

// CartSaga is the cart command in progress.
type CartSaga struct {
	Command   CartCommand    `json:"command"`
	Partition int32          `json:"partition"`
	Offset    int64          `json:"offset"`
	Phase     string         `json:"phase"`
	Lines     []CartSagaLine `json:"lines"`
	StartedAt Millis         `json:"started_at"`
}

// CartQueued is a cart command waiting for the saga of its cart to end.
type CartQueued struct {
	Command   CartCommand `json:"command"`
	Partition int32       `json:"partition"`
	Offset    int64       `json:"offset"`
}

// CartEntity is the cart-changelog value under cart/<cart_id>.
type CartEntity struct {
	CartID    string       `json:"cart_id"`
	Holds     []CartHold   `json:"holds"`
	Saga      *CartSaga    `json:"saga"`
	Queue     []CartQueued `json:"queue"`
	Version   int64        `json:"version"`
	Event     string       `json:"event"`
	CommandID string       `json:"command_id"`
	UpdatedAt Millis       `json:"updated_at"`
}

// CartDecided is the cart-changelog value under cart-command/<command_id>: the
// original result of a decided cart command, kept for the dedupe window.
type CartDecided struct {
	CommandID string     `json:"command_id"`
	Result    CartResult `json:"result"`
	Version   int64      `json:"version"`
	Event     string     `json:"event"`
	UpdatedAt Millis     `json:"updated_at"`
}
