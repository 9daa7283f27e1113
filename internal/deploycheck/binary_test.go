package deploycheck

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The binary under test, built once per test process from ./cmd/reservations.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// reservationsBinary builds ./cmd/reservations (once) and returns its path.
func reservationsBinary(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			binary.err = fmt.Errorf("go tool not on PATH: %w", err)
			return
		}
		if binary.dir, err = os.MkdirTemp("", "deploycheck-bin-"); err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(binary.dir, "reservations")
		cmd := exec.Command(goTool, "build", "-o", binary.path, "./cmd/reservations")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build ./cmd/reservations: %w\n%s", err, out)
		}
	})
	require.NoError(t, binary.err)
	return binary.path
}

func removeBinary() {
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
}

// cleanEnv is the test process's environment without RESERVATIONS_*
// variables, so that a developer's settings do not leak into the binary.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RESERVATIONS_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// settingsTable is the configuration surface of the binary as printed by
// `reservations config-table`: subcommand -> its environment variables.
type settingsTable map[string]map[string]bool

var (
	tableHeading = regexp.MustCompile("^\\*\\*`reservations ([a-z-]+)`\\*\\*")
	tableRow     = regexp.MustCompile("^\\| `--[a-z0-9-]+` \\| `(RESERVATIONS_[A-Z0-9_]+)` \\|")
)

func configTable(t testing.TB) settingsTable {
	t.Helper()
	cmd := exec.Command(reservationsBinary(t), "config-table")
	cmd.Env = cleanEnv()
	out, err := cmd.Output()
	require.NoError(t, err, "reservations config-table")
	table := settingsTable{}
	var cur map[string]bool
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := tableHeading.FindStringSubmatch(line); m != nil {
			cur = map[string]bool{}
			table[m[1]] = cur
			continue
		}
		if m := tableRow.FindStringSubmatch(line); m != nil && cur != nil {
			cur[m[1]] = true
		}
	}
	require.NotEmpty(t, table["serve"], "config-table printed no settings of serve:\n%s", out)
	return table
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// process is a running subcommand of the binary.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error // of Wait, once done is closed
}

// start runs the binary with args and env (besides cleanEnv), logging to a
// file in t's temp dir. The process is stopped when t ends.
func start(t testing.TB, name string, env []string, args ...string) *process {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	require.NoError(t, err)
	p := &process{name: name, log: log, done: make(chan struct{})}
	p.cmd = exec.Command(reservationsBinary(t), args...)
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	require.NoError(t, p.cmd.Start(), "start %s", name)
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		log.Close()
	})
	return p
}

// output returns what the process wrote so far.
func (p *process) output() string {
	b, _ := os.ReadFile(p.log.Name())
	return string(b)
}

// stop sends SIGTERM and waits for the exit, killing after 30s.
func (p *process) stop(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 30s of SIGTERM; killed. Output:\n%s", p.name, p.output())
	}
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitHTTP polls url until it answers 200, the process exits or timeout
// passes.
func (p *process) waitHTTP(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			t.Fatalf("%s exited (%v) before %s answered 200. Output:\n%s", p.name, p.err, url, p.output())
		}
		if code, _, err := get(url); err == nil && code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not answer 200 within %s. Output:\n%s", p.name, url, timeout, p.output())
		}
		time.Sleep(100 * time.Millisecond) // polling an external process: no event to wait on
	}
}

func get(url string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// exposition is what one scrape of /metrics declares: family name -> type
// ("counter", "gauge", "histogram", "summary", "untyped").
type exposition map[string]string

// scrape reads url (Prometheus text format) and returns every metric family
// it declares, by its # TYPE line (a family declared without samples counts)
// or, lacking one, by the names of its samples.
func scrape(t testing.TB, url string) exposition {
	t.Helper()
	code, body, err := get(url)
	require.NoError(t, err, url)
	require.Equal(t, http.StatusOK, code, url)
	return parseExposition(body)
}

func parseExposition(body []byte) exposition {
	exp := exposition{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "# TYPE "):
			if f := strings.Fields(line); len(f) >= 4 {
				exp[f[2]] = f[3]
			}
		case strings.HasPrefix(line, "#"):
			if f := strings.Fields(line); len(f) >= 3 && f[1] == "HELP" {
				if _, ok := exp[f[2]]; !ok {
					exp[f[2]] = "untyped"
				}
			}
		default:
			name := line[:strings.IndexAny(line+" ", "{ ")]
			if _, ok := exp[name]; ok {
				continue
			}
			if base, _, ok := family(name); ok {
				if _, ok := exp[base]; ok {
					continue
				}
			}
			exp[name] = "untyped"
		}
	}
	return exp
}

// merge adds the families of other to e.
func (e exposition) merge(other exposition) {
	for k, v := range other {
		if _, ok := e[k]; !ok || e[k] == "untyped" {
			e[k] = v
		}
	}
}

// has reports whether the series name belongs to a declared family: the
// family itself, or x_bucket / x_sum / x_count of a histogram or summary x.
func (e exposition) has(name string) bool {
	if _, ok := e[name]; ok {
		return true
	}
	base, types, ok := family(name)
	if !ok {
		return false
	}
	for _, typ := range types {
		if e[base] == typ {
			return true
		}
	}
	return false
}

func TestParseExposition(t *testing.T) {
	exp := parseExposition([]byte(`# HELP a_total Things.
# TYPE a_total counter
a_total 3
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{le="1"} 1
lat_seconds_sum 0.5
lat_seconds_count 1
# HELP empty_vec Declared, no samples.
# TYPE empty_vec gauge
untyped_one{x="y"} 1
`))
	for _, n := range []string{"a_total", "lat_seconds", "lat_seconds_bucket", "lat_seconds_sum",
		"lat_seconds_count", "empty_vec", "untyped_one"} {
		require.True(t, exp.has(n), n)
	}
	for _, n := range []string{"a", "a_total_bucket", "empty_vec_bucket", "missing"} {
		require.False(t, exp.has(n), n)
	}
	require.Equal(t, "histogram", exp["lat_seconds"])
}

// portOf returns the port of a host:port address.
func portOf(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err, addr)
	n, err := strconv.Atoi(p)
	require.NoError(t, err, addr)
	return n
}
