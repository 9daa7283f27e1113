package cart

// Entities is an in-memory set of coordinator entities keyed by changelog key:
// the pending writes of a transaction, or a whole partition in tests and tools.
type Entities map[string]Change

// Apply records changes, later ones winning. A tombstone is kept as an entry
// without a value, so that pending writes layered over a store hide the key.
func (e Entities) Apply(changes []Change) {
	for _, c := range changes {
		e[c.Key] = c
	}
}

// Cart implements State.
func (e Entities) Cart(cartID string) (Entity, bool) {
	if c, ok := e[CartKey(cartID)]; ok && c.Cart != nil {
		return *c.Cart, true
	}
	return Entity{}, false
}

// Decision implements State.
func (e Entities) Decision(commandID string) (Decided, bool) {
	if c, ok := e[DecidedKey(commandID)]; ok && c.Decided != nil {
		return *c.Decided, true
	}
	return Decided{}, false
}
