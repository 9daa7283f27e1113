package dockerprobe

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// helperEnv makes the test binary run one probe and print its answer (see
// TestHelperProbe): testcontainers caches the Docker host it finds for the
// process, so each scenario gets a fresh process.
const helperEnv = "DOCKERPROBE_HELPER"

func TestEndpoint(t *testing.T) {
	files := func(present ...string) func(string) bool {
		return func(p string) bool {
			for _, f := range present {
				if p == f {
					return true
				}
			}
			return false
		}
	}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name   string
		getenv func(string) string
		exists func(string) bool
		want   string
		ok     bool
	}{
		{"nothing", env(), files(), "", false},
		{"DOCKER_HOST wins", env("DOCKER_HOST", "tcp://h:2375"), files("/var/run/docker.sock"), "DOCKER_HOST=tcp://h:2375", true},
		{"properties file", env(), files("/home/u/.testcontainers.properties", "/var/run/docker.sock"), "/home/u/.testcontainers.properties", true},
		{"default socket", env(), files("/var/run/docker.sock"), "/var/run/docker.sock", true},
		{"rootless XDG", env("XDG_RUNTIME_DIR", "/run/user/1000"), files("/run/user/1000/docker.sock"), "/run/user/1000/docker.sock", true},
		{"rootless uid", env(), files("/run/user/1000/docker.sock"), "/run/user/1000/docker.sock", true},
		{"desktop", env(), files("/home/u/.docker/run/docker.sock"), "/home/u/.docker/run/docker.sock", true},
		{"XDG set, no socket", env("XDG_RUNTIME_DIR", "/run/user/1000"), files(), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := endpoint(tc.getenv, tc.exists, "/home/u", 1000)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestDisabled(t *testing.T) {
	t.Setenv(EnvDocker, "0")
	start := time.Now()
	err := Probe(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), EnvDocker+"=0")
	assert.Less(t, time.Since(start), 100*time.Millisecond)
}

// TestMissingSocket: DOCKER_HOST names a socket that does not exist. The
// answer comes at once; it is "no engine" unless another endpoint that
// testcontainers also tries (the default socket) has one.
func TestMissingSocket(t *testing.T) {
	t.Parallel()
	ans := runProbe(t, "unix://"+t.TempDir()+"/missing/docker.sock")
	assert.Less(t, ans.elapsed, 3*time.Second, "probe of a missing socket took %s", ans.elapsed)
	if otherEngine() {
		t.Skipf("a Docker socket exists here and testcontainers may fall back to it (answer %q): the missing-socket case cannot be checked", ans.err)
	}
	assert.NotEmpty(t, ans.err, "probe found an engine behind a missing socket")
	assert.Contains(t, ans.err, "ping Docker engine")
}

// TestSilentEngine: DOCKER_HOST names a TCP endpoint that accepts connections
// and never answers, the case where a Docker client waits forever. Engine
// gives up after Timeout and says so.
func TestSilentEngine(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never answered
		}
	}()
	ans := runProbe(t, "tcp://"+l.Addr().String())
	assert.Less(t, ans.elapsed, 3*time.Second, "probe of a silent engine took %s", ans.elapsed)
	assert.GreaterOrEqual(t, ans.elapsed, Timeout-100*time.Millisecond, "answered before the timeout: %q", ans.err)
	assert.Contains(t, ans.err, "no answer")
	assert.True(t, ans.cached, "second call of Engine was not answered from the cache")
}

type answer struct {
	err     string // empty: an engine answered
	elapsed time.Duration
	cached  bool // a second Engine call answered the same at once
}

// runProbe runs TestHelperProbe in a subprocess with DOCKER_HOST=host and a
// home and runtime directory without Docker files.
func runProbe(t *testing.T, host string) answer {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProbe$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "DOCKER_HOST="+host, "HOME="+home,
		"XDG_RUNTIME_DIR="+home, EnvDocker+"=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "helper:\n%s", out)
	var ans answer
	var found bool
	for line := range strings.Lines(string(out)) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "PROBE ")
		if !ok {
			continue
		}
		ms, rest, _ := strings.Cut(rest, " ")
		cached, msg, _ := strings.Cut(rest, " ")
		n, err := strconv.Atoi(ms)
		require.NoError(t, err, "helper line %q", line)
		ans = answer{err: msg, elapsed: time.Duration(n) * time.Millisecond, cached: cached == "cached"}
		found = true
	}
	require.True(t, found, "helper printed no answer:\n%s", out)
	t.Logf("DOCKER_HOST=%s: %s after %s", host, ans.err, ans.elapsed)
	return ans
}

func TestHelperProbe(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return // subprocess helper of runProbe
	}
	start := time.Now()
	err := Engine()
	elapsed := time.Since(start)
	start = time.Now()
	again := Engine()
	cached := "uncached"
	if fmt.Sprint(again) == fmt.Sprint(err) && time.Since(start) < 50*time.Millisecond {
		cached = "cached"
	}
	msg := ""
	if err != nil {
		msg = strings.ReplaceAll(err.Error(), "\n", " ")
	}
	fmt.Printf("PROBE %d %s %s\n", elapsed.Milliseconds(), cached, msg)
}

// otherEngine reports whether a Docker socket exists that testcontainers tries
// after DOCKER_HOST.
func otherEngine() bool {
	return exists("/var/run/docker.sock") || exists(fmt.Sprintf("/run/user/%d/docker.sock", os.Getuid()))
}
