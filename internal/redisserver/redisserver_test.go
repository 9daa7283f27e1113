package redisserver

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const helperEnv = "REDISSERVER_HELPER"

func client(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true, MaxRetries: -1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestStart checks the persistence settings of both fsync policies, that the
// server keeps writes, and that Stop stops it and removes its directory.
func TestStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts      Options
		wantFsync string
	}{
		{Options{}, FsyncEverysec},
		{Options{AppendFsync: FsyncAlways}, FsyncAlways},
	} {
		t.Run(tc.wantFsync, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv, err := Start(ctx, tc.opts)
			require.NoError(t, err)
			t.Cleanup(func() { _ = srv.Stop() })
			assert.True(t, srv.Running())
			assert.Equal(t, tc.wantFsync, srv.AppendFsync())
			assert.Contains(t, srv.Source(), srv.Dir())
			assert.Contains(t, srv.Settings(), "appendfsync "+tc.wantFsync)
			assert.Regexp(t, `^\d+\.\d+\.\d+`, srv.Version())

			c := client(t, srv.Addr())
			for name, want := range map[string]string{
				"appendonly": "yes", "appendfsync": tc.wantFsync, "save": "", "bind": "127.0.0.1",
				"port": strconv.Itoa(srv.port), "dir": filepath.Join(srv.Dir(), "data"),
			} {
				got, err := c.ConfigGet(ctx, name).Result()
				require.NoError(t, err, name)
				assert.Equal(t, want, got[name], name)
			}
			require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
			assert.Equal(t, "v", c.Get(ctx, "k").Val())
			assert.DirExists(t, filepath.Join(srv.Dir(), "data", "appendonlydir"), "the append-only file is written")

			require.NoError(t, srv.Stop())
			require.NoError(t, srv.Stop(), "Stop is idempotent")
			assert.False(t, srv.Running())
			assert.NoDirExists(t, srv.Dir())
			assert.Error(t, c.Ping(ctx).Err(), "a stopped server answers nothing")
			assert.Error(t, srv.start(ctx), "a stopped server does not come back")
		})
	}
}

func TestStartRejectsUnknownFsync(t *testing.T) {
	_, err := Start(context.Background(), Options{AppendFsync: "no"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `appendfsync "no"`)
}

// TestMissingBinaryNamesThePackage: without redis-server, Start fails and
// says how to install it.
func TestMissingBinaryNamesThePackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	saved := fallbackDirs
	fallbackDirs = []string{t.TempDir()}
	t.Cleanup(func() { fallbackDirs = saved })
	_, err := Start(context.Background(), Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "apt-get install redis-server")
}

// TestKilledProcessTakesServerDown starts a server in a subprocess, kills the
// subprocess with SIGKILL (no cleanup can run) and checks that the server goes
// down and its directory is swept by the next start.
func TestKilledProcessTakesServerDown(t *testing.T) {
	t.Parallel()
	if _, err := FindBinary(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldServer$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=hold")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var addr, dir string
	sc := bufio.NewScanner(stdout)
	for (addr == "" || dir == "") && sc.Scan() {
		_, _ = fmt.Sscanf(sc.Text(), "ADDR %s", &addr)
		_, _ = fmt.Sscanf(sc.Text(), "DIR %s", &dir)
	}
	require.NotEmpty(t, addr, "helper printed no address")
	require.NotEmpty(t, dir, "helper printed no directory")
	ctx := context.Background()
	require.NoError(t, ping(ctx, addr), "helper's server is not up")

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	require.Eventually(t, func() bool { return ping(ctx, addr) != nil }, 30*time.Second, 50*time.Millisecond,
		"server of a killed process still answers")

	sweepStale(filepath.Dir(dir))
	assert.NoDirExists(t, dir, "directory of a dead process not swept")
}

func TestHelperHoldServer(t *testing.T) {
	if os.Getenv(helperEnv) != "hold" {
		return // subprocess helper of TestKilledProcessTakesServerDown
	}
	srv, err := Start(context.Background(), Options{})
	require.NoError(t, err)
	fmt.Printf("ADDR %s\nDIR %s\n", srv.Addr(), srv.Dir())
	time.Sleep(time.Hour) // until killed
}

// sweepStale removes only directories whose owner is gone, and kills the
// server of a gone owner only when it works in that directory.
func TestSweepStale(t *testing.T) {
	base := t.TempDir()
	mk := func(owner *string) string {
		dir, err := os.MkdirTemp(base, dirPrefix)
		require.NoError(t, err)
		if owner != nil {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(*owner), 0o644))
		}
		return dir
	}
	empty, live := "", strconv.Itoa(os.Getpid())
	dead := "999999999" // above any pid_max
	creating, halfWritten, ours, gone := mk(nil), mk(&empty), mk(&live), mk(&dead)
	// A gone owner's pid file naming a live process working elsewhere (this
	// test): the process must survive the sweep.
	require.NoError(t, os.WriteFile(filepath.Join(gone, "redis.pid"), []byte(live), 0o644))
	sweepStale(base)
	for _, d := range []string{creating, halfWritten, ours} {
		assert.DirExists(t, d)
	}
	assert.NoDirExists(t, gone)
}
