package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/pgtest"
)

// TestDevFirstLogLineNamesThePostgresSink: the first line dev logs says
// whether it writes the tables into a local PostgreSQL server it found (and
// which), before the broker and the processor start; without a server, the
// first line says the sink is off and how to turn it on.
func TestDevFirstLogLineNamesThePostgresSink(t *testing.T) {
	db := pgtest.NewDatabase(t)
	saved := localDSNs
	t.Cleanup(func() { localDSNs = saved })

	for _, tc := range []struct {
		name  string
		local []string
		want  []string
	}{
		{"a local server answers", []string{"host=/nonexistent-socket-dir user=postgres dbname=postgres", db.DSN},
			[]string{"postgres sink on: writing tables stock and reservations into a local PostgreSQL server it found",
				"--pg-dsn (RESERVATIONS_PG_DSN) not set", `dsn="` + db.DSN + `"`}},
		{"none answers", []string{"host=/nonexistent-socket-dir user=postgres dbname=postgres", "postgres://postgres@127.0.0.1:1/postgres"},
			[]string{"postgres sink off: --pg-dsn (RESERVATIONS_PG_DSN) not set and no local server"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			localDSNs = tc.local
			kafkaPort := freePort(t)
			httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			dev := startDev(t, "--kafka-port", strconv.Itoa(kafkaPort), "--data-dir", t.TempDir(), "--http-addr", httpAddr,
				"--partitions", "1", "--log-level", "info")
			waitReady(t, dev, httpAddr, 1)
			require.Equal(t, exitOK, dev.stop(t), dev.stderr.String())
			first, _, _ := strings.Cut(dev.stderr.String(), "\n")
			for _, w := range tc.want {
				assert.Contains(t, first, w)
			}
			assert.Contains(t, dev.stderr.String(), "embedded kafka broker listening", "the broker starts after")
		})
	}
}

// TestMakeReset: `make reset` removes the dev data folder with a one-line
// message, and refuses (leaving it) while a dev holds its lock.
func TestMakeReset(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("make not installed: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	data := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.MkdirAll(filepath.Join(data, "state", "reservations.changelog-0"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(data, "kafka.log"), []byte("x"), 0o644))
	reset := func() (string, error) {
		out, err := exec.Command("make", "-s", "-C", root, "reset", "DATA="+data).CombinedOutput()
		return string(out), err
	}

	if _, err := exec.LookPath("flock"); err == nil {
		unlock, err := lockDir(data) // as a running dev holds it
		require.NoError(t, err)
		out, err := reset()
		assert.Error(t, err, out)
		assert.Contains(t, out, "make reset: "+data+" is in use by a running 'reservations dev' (make run): stop it first")
		assert.DirExists(t, data)
		unlock()
	}

	out, err := reset()
	require.NoError(t, err, out)
	assert.Equal(t, "make reset: removed "+data+" (broker log and processor state); the next 'make run' starts empty\n", out)
	assert.NoDirExists(t, data)

	out, err = reset() // nothing to remove: still fine
	require.NoError(t, err, out)
}
