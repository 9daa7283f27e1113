package cart

// The size of a cart entity.
//
// A cart is ONE changelog record (cart/<cart_id>), written in the
// coordinator's transaction. A record over the producer's limit (about 1 MB)
// fails the transaction, which is retried forever and stalls every partition
// of the instance. So the entity must stay well under 1 MB whatever the
// commands; the rules bound what it holds:
//
//   - holds: at most Rules.MaxHolds (100), active or ended but not yet pruned;
//     a cart.reserve whose lines, added to them, would exceed it is rejected
//     with cart_full;
//   - the saga: a cart.reserve of at most schemas.MaxCartItems (100) lines,
//     started only when holds + lines <= MaxHolds; a cart.commit or
//     cart.release has one line per hold;
//   - the queue: at most Rules.MaxQueue (16) cart commands, whose cart.reserve
//     lines total at most Rules.MaxQueuedLines (100); beyond: cart_busy.
//
// Worst case per element, from schemas.AppendCartEntity (TestWorstCaseBytes checks each
// figure against the encoder). Ids (command_id, cart_id, reservation_id,
// order_id) are at most 128 characters, and a character encodes to at most 6
// bytes ("<" is written \u003c, a control character \u00XX, an invalid byte
// \ufffd): 2+768 = 770 bytes. SKUs are 128 ASCII characters: 130 bytes. A
// quantity or an offset is an int64 (19 digits), a time 26 bytes, a reason at
// most 256 characters: 2+1,536 = 1,538 bytes.
//
//	element               worst case                                       bytes
//	hold                  {"sku":130,"reservation_id":770,"quantity":19,
//	                       "expires_at":26}                                    998
//	saga line             {"sku":130,"reservation_id":770,"quantity":19,
//	                       "outcome":"rejected","reason":24,"message":922,
//	                       "status":"released","expires_at":26,
//	                       "pending":false,"held":false,"prepared":false}    2,052
//	cart.reserve item     {"sku":130,"quantity":19,"reservation_id":770}      958
//	queued cart command   command_id, type, cart_id, reason, issued_at,
//	                      ttl_seconds, reply_to, reply_partition,
//	                      partition, offset; without items                 3,310
//	the saga's fields     a cart.commit (3,379 for a cart.reserve), its
//	                      partition, offset, phase, started_at; no lines    4,139
//	the entity's fields   cart_id, version, event, command_id, updated_at   1,693
//
// The message of a line is the SKU processor's: the longest it writes on a
// cart's per-SKU command is "no reservation <id> for sku <sku>" (15+768+9+128
// characters, 922 bytes).
//
// With the defaults the largest carts (TestMaxCartEncodedSize builds them) are
//
//	commit saga   100 holds, 100 lines, the saga's fields, 16 queued commands
//	              with 100 lines in all, the entity's fields:
//	              99,800 + 205,200 + 4,139 + 16*3,310 + 100*958 + 1,693 = 459,592
//	reserve saga  0 holds, 100 lines, a cart.reserve of 100 items, the same queue:
//	              205,200 + 3,379 + 100*958 + 16*3,310 + 100*958 + 1,693 = 454,832
//	idle          100 holds: 99,800 + 1,693                              = 101,493
//
// bytes (encoded: 459,743, 454,994 and 101,490; the first element of a list
// has no comma, brackets replace null, a command's items add `,"items":[]`):
// under 512 KiB, under half the producer's limit. Each further hold adds up to
// 998+2,052 bytes, each queued line 958, each queued command 3,310. Realistic
// ids (a 36-character UUID, a 10-character SKU) make a hold about 130 bytes.
//
// The bound relies on what the contract says of fields the coordinator does
// not check: issued_at in its RFC 3339 format, order_id on cart.commit only
// (checked there: at most 128 characters). Each is otherwise limited only by
// the record size of a cart command (the processor's MaxCommandBytes), and so
// is the message of a forged line result.

const (
	// defaultMaxQueue is Rules.MaxQueue when it is not positive.
	defaultMaxQueue = 16
	// defaultMaxHolds is Rules.MaxHolds when it is not positive.
	defaultMaxHolds = 100
	// defaultMaxQueuedLines is Rules.MaxQueuedLines when it is not positive.
	defaultMaxQueuedLines = 100
)

func (c *Core) maxQueue() int {
	if c.Rules.MaxQueue <= 0 {
		return defaultMaxQueue
	}
	return c.Rules.MaxQueue
}

func (c *Core) maxHolds() int {
	if c.Rules.MaxHolds <= 0 {
		return defaultMaxHolds
	}
	return c.Rules.MaxHolds
}

func (c *Core) maxQueuedLines() int {
	if c.Rules.MaxQueuedLines <= 0 {
		return defaultMaxQueuedLines
	}
	return c.Rules.MaxQueuedLines
}

// queuedLines counts the lines of the waiting cart commands.
func queuedLines(e *Entity) int {
	n := 0
	for i := range e.Queue {
		n += len(e.Queue[i].Command.Items)
	}
	return n
}
