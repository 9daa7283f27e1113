package processor

// Maps that hold one transaction's keys (the pending writes, their changelog
// values, the SKUs whose oversold flag changed) are emptied after every
// commit and filled again. Go keeps a map's room at its largest size, and
// ranging over or clearing a map costs its room, not its length: after one
// burst (a backlog read in big batches, a restore), every later transaction
// of a few keys would walk the burst's thousands of empty slots, on every
// partition it touches.

// sparseRoom is the room below which a map is always cleared and kept:
// walking it costs less than growing a new one.
const sparseRoom = 256

// emptied empties m for the next transaction and returns the map to use.
// *room tracks the largest length m has had since it was made. When that is
// above sparseRoom and m now holds less than an eighth of it, m is dropped
// for a new map sized to the current length: a steady stream of big
// transactions keeps its map, a burst does not leave one behind. An empty m
// is returned as it is.
func emptied[K comparable, V any](m map[K]V, room *int) map[K]V {
	n := len(m)
	if n == 0 {
		// Already empty (the unsent keys: emptied by the seal, then again
		// by the commit): the emptying that saw its keys has decided.
		return m
	}
	*room = max(*room, n)
	if *room > sparseRoom && n < *room/8 {
		*room = n
		return make(map[K]V, n)
	}
	clear(m)
	return m
}
