package processor

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestEmptied(t *testing.T) {
	fill := func(m map[string]int, n int) {
		for i := range n {
			m[strconv.Itoa(i)] = i
		}
	}
	var room int
	m := map[string]int{}
	steps := []struct {
		name     string
		n        int
		wantNew  bool
		wantRoom int
	}{
		{"small maps are kept", 10, false, 10},
		{"a steady size is kept", 5000, false, 5000},
		{"emptied again while empty (a seal, then the commit): kept", 0, false, 5000},
		{"big again: kept", 4000, false, 5000},
		{"a big room with few keys: a new map", 100, true, 100},
		{"small again: kept", 3, false, 100},
	}
	for _, s := range steps {
		fill(m, s.n)
		before := m
		m = emptied(m, &room)
		assert.Empty(t, m, s.name)
		m["probe"] = 1
		_, sameMap := before["probe"]
		assert.Equal(t, s.wantNew, !sameMap, s.name)
		assert.Equal(t, s.wantRoom, room, s.name)
		delete(m, "probe")
	}
}

// BenchmarkTxnMapAfterBurst is a transaction of 3 keys on a map that once held
// 20,000: its cost with clear alone against emptied.
func BenchmarkTxnMapAfterBurst(b *testing.B) {
	for _, c := range []struct {
		name  string
		empty func(map[string][]byte, *int) map[string][]byte
	}{
		{"clear", func(m map[string][]byte, _ *int) map[string][]byte { clear(m); return m }},
		{"emptied", emptied[string, []byte]},
	} {
		b.Run(c.name, func(b *testing.B) {
			m, room := map[string][]byte{}, 0
			for i := range 20000 {
				m[strconv.Itoa(i)] = nil
			}
			m = c.empty(m, &room)
			n := 0
			for b.Loop() {
				m["a"], m["b"], m["c"] = nil, nil, nil
				for k := range m {
					n += len(k)
				}
				m = c.empty(m, &room)
			}
			_ = n
		})
	}
}
