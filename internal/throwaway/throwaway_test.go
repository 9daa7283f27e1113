package throwaway

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// SweepStale removes the directories of dead owners (stopping their server
// first) and leaves those of live owners, young directories without an owner
// and other names alone; an old directory without an owner goes.
func TestSweepStale(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, owner string, age time.Duration) string {
		dir := filepath.Join(base, name)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		if owner != "" {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(owner), 0o644))
		}
		old := time.Now().Add(-age)
		require.NoError(t, os.Chtimes(dir, old, old))
		return dir
	}
	dead := mk("srv-dead", "999999999", 0)
	live := mk("srv-live", strconv.Itoa(os.Getpid()), 0)
	young := mk("srv-young", "", 0)
	old := mk("srv-old", "", 2*time.Hour)
	other := mk("other-dead", "999999999", 0)
	var stopped []string
	SweepStale(base, "srv-", func(dir string) { stopped = append(stopped, dir) })
	assert.ElementsMatch(t, []string{dead, old}, stopped)
	for dir, kept := range map[string]bool{dead: false, live: true, young: true, old: false, other: true} {
		_, err := os.Stat(dir)
		assert.Equal(t, kept, err == nil, dir)
	}
}

func TestWriteOwnerAndPIDFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, WriteOwner(dir))
	pid, ok := PIDFile(filepath.Join(dir, "owner.pid"))
	assert.True(t, ok)
	assert.Equal(t, os.Getpid(), pid)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dead.pid"), []byte("999999999\nmore\n"), 0o644))
	_, ok = PIDFile(filepath.Join(dir, "dead.pid"))
	assert.False(t, ok, "a dead process")
	_, ok = PIDFile(filepath.Join(dir, "missing.pid"))
	assert.False(t, ok)
}
