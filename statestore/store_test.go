package statestore

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCommitGetOffsetScan(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	off, err := s.Offset()
	require.NoError(t, err)
	assert.Zero(t, off)

	require.NoError(t, s.Commit(map[string][]byte{"stock/A": []byte(`{"a":1}`), "reservation/A/r1": []byte(`{"r":1}`)}, 7))
	require.NoError(t, s.Commit(map[string][]byte{"stock/A": []byte(`{"a":2}`), "reservation/A/r1": nil}, 9))
	v, err := s.Get("stock/A")
	require.NoError(t, err)
	assert.Equal(t, `{"a":2}`, string(v))
	v, err = s.Get("reservation/A/r1")
	require.NoError(t, err)
	assert.Nil(t, v)
	off, err = s.Offset()
	require.NoError(t, err)
	assert.Equal(t, int64(9), off)

	require.NoError(t, s.Close())
	s, err = Open(dir, Options{})
	require.NoError(t, err)
	defer s.Close()
	off, err = s.Offset()
	require.NoError(t, err)
	assert.Equal(t, int64(9), off, "offset survives reopen")
	got, err := s.Dump()
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"stock/A": []byte(`{"a":2}`)}, got)
}

func TestCommitLargeBatchSplits(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MemTableSize: 2 << 20})
	require.NoError(t, err)
	defer s.Close()
	big := make(map[string][]byte)
	for i := range 20000 {
		big[fmt.Sprintf("stock/S%05d", i)] = make([]byte, 100)
	}
	require.NoError(t, s.Commit(big, 42))
	got, err := s.Dump()
	require.NoError(t, err)
	assert.Len(t, got, 20000)
	off, err := s.Offset()
	require.NoError(t, err)
	assert.Equal(t, int64(42), off)
}

func TestLoadReplacesEverything(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Commit(map[string][]byte{"stock/OLD": []byte("x")}, 3))
	state := map[string][]byte{"stock/B": []byte("b"), "stock/A": []byte("a"), "command/c1": []byte("c"), "gone": nil}
	require.NoError(t, s.Load(state, 100, map[string][]byte{MetaTopicID: []byte("tid")}))
	got, err := s.Dump()
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"stock/B": []byte("b"), "stock/A": []byte("a"), "command/c1": []byte("c")}, got)
	off, err := s.Offset()
	require.NoError(t, err)
	assert.Equal(t, int64(100), off)
	tid, err := s.Meta(MetaTopicID)
	require.NoError(t, err)
	assert.Equal(t, "tid", string(tid))
	// Writes after a load work as usual.
	require.NoError(t, s.Commit(map[string][]byte{"stock/A": []byte("a2")}, 101))
	v, err := s.Get("stock/A")
	require.NoError(t, err)
	assert.Equal(t, "a2", string(v))
}

func TestCorruptStoreIsReported(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	require.NoError(t, s.Commit(map[string][]byte{"stock/A": []byte("a")}, 1))
	require.NoError(t, s.Close())
	// Overwrite every file with garbage.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), []byte("garbage garbage garbage"), 0o644))
	}
	_, err = Open(dir, Options{})
	require.ErrorIs(t, err, ErrCorrupt)
	require.NoError(t, Remove(dir))
	s, err = Open(dir, Options{})
	require.NoError(t, err, "a wiped folder opens empty")
	off, err := s.Offset()
	require.NoError(t, err)
	assert.Zero(t, off)
	require.NoError(t, s.Close())
}

// A folder another Store holds is locked, not corrupt: the caller must not
// wipe it (the old code reported ErrCorrupt, and restore then removed it).
func TestOpenLockedIsNotCorrupt(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Commit(map[string][]byte{"stock/A": []byte(`{}`)}, 3))
	_, err = Open(dir, Options{})
	require.ErrorIs(t, err, ErrLocked)
	assert.NotErrorIs(t, err, ErrCorrupt)
}

func TestOwnedAt(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	require.NoError(t, err)
	defer s.Close()
	_, ok, err := s.OwnedAt()
	require.NoError(t, err)
	assert.False(t, ok, "a new store was never owned")
	at := time.UnixMilli(1_700_000_000_123)
	require.NoError(t, s.SetOwnedAt(at))
	got, ok, err := s.OwnedAt()
	require.NoError(t, err)
	assert.True(t, ok)
	assert.True(t, at.Equal(got), "owned_at %s, want %s", got, at)
}
