package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/kafkatest"
)

// loggingCommands are the subcommands that write a log (send: its errors).
var loggingCommands = []string{"dev", "serve", "send", "sink", "verify", "replay"}

// TestLogFormatSetting: every subcommand that logs takes --log-format
// (RESERVATIONS_LOG_FORMAT), text by default; an invalid value exits 2
// naming the setting, from the flag or the environment.
func TestLogFormatSetting(t *testing.T) {
	for _, cmd := range commands() {
		s, _ := cmd.setup()
		st := s.lookup("log-format")
		if !assert.Equal(t, contains(loggingCommands, cmd.name), st != nil, "reservations %s --log-format", cmd.name) || st == nil {
			continue
		}
		assert.Equal(t, "RESERVATIONS_LOG_FORMAT", st.Env, cmd.name)
		assert.Equal(t, "text", st.Default, cmd.name)
	}
	for _, name := range loggingCommands {
		for _, tc := range []struct {
			how  string
			env  []string
			args []string
			want string
		}{
			{"flag", nil, []string{"--log-format", "xml"}, `invalid value "xml" for --log-format (RESERVATIONS_LOG_FORMAT): want text or json`},
			{"env", []string{"RESERVATIONS_LOG_FORMAT", "logfmt"}, nil, `invalid value "logfmt" for RESERVATIONS_LOG_FORMAT (--log-format): want text or json`},
		} {
			t.Run(name+" "+tc.how, func(t *testing.T) {
				code, stdout, stderr := runCLI(envMap(tc.env...), append([]string{name}, tc.args...)...)
				assert.Equal(t, exitUsage, code)
				assert.Empty(t, stdout)
				assert.Contains(t, stderr, "reservations "+name+": "+tc.want)
			})
		}
	}
	// Case and spaces do not matter.
	var cfg sinkFlags
	s := newSettings("sink")
	cfg.register(s)
	_, err := s.Parse(nil, envMap("RESERVATIONS_LOG_FORMAT", " JSON "))
	require.NoError(t, err)
	assert.Equal(t, logFormatJSON, cfg.Log.Format)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// jsonLines decodes every line of out as one JSON object, failing on any
// other line.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "not a JSON line: %q\nall:\n%s", line, out)
		for _, k := range []string{"time", "level", "msg"} {
			assert.Contains(t, rec, k, line)
		}
		recs = append(recs, rec)
	}
	return recs
}

// findMsg returns the first record whose msg starts with prefix.
func findMsg(recs []map[string]any, prefix string) map[string]any {
	for _, r := range recs {
		if m, _ := r["msg"].(string); strings.HasPrefix(m, prefix) {
			return r
		}
	}
	return nil
}

// TestLogFormatJSON runs serve, send and verify with --log-format json
// (from the environment for serve): every line they write on stderr is one
// JSON object, their failures included; text stays the default.
func TestLogFormatJSON(t *testing.T) {
	c := kafkatest.New(t)
	names := c.Topics(t, 1)
	prefix := strings.TrimSuffix(names.Commands, ".commands")
	brokers := strings.Join(c.Brokers, ",")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	t.Setenv("RESERVATIONS_LOG_FORMAT", "json") // run reads the process environment
	serve := startServe(t, "--brokers", brokers, "--topic-prefix", prefix, "--group", prefix+"-group", "--carts=false",
		"--state-dir", t.TempDir(), "--http-addr", httpAddr, "--log-level", "info")
	waitReady(t, serve, httpAddr, 1)
	eventually(t, 10*time.Second, "processor ready logged", func() bool {
		return strings.Contains(serve.stderr.String(), `"msg":"processor ready"`)
	})
	code, _, stderr := send(t, brokers, "stock.set", "--topic-prefix", prefix, "--sku", "SKU-1", "--on-hand", "3")
	require.Equal(t, exitOK, code, stderr)
	require.Equal(t, exitOK, serve.stop(t), serve.stderr.String())

	recs := jsonLines(t, serve.stderr.String())
	running := findMsg(recs, "reservations serve running")
	require.NotNil(t, running, serve.stderr.String())
	assert.Equal(t, "INFO", running["level"])
	assert.Equal(t, "http://"+httpAddr, running["http"])
	assert.Equal(t, buildInfo().Version, running["version"])
	assert.Equal(t, buildInfo().Commit, running["commit"])
	conn := findMsg(recs, "kafka connection")
	require.NotNil(t, conn)
	assert.Equal(t, map[string]any{"tls": false, "ca_file": "", "cert_file": "", "key_file": "", "insecure_skip_verify": false,
		"sasl_mechanism": "", "user": "", "password": "", "oauth_token": ""}, conn["kafka"], "the settings as a JSON object")
	assert.NotNil(t, findMsg(recs, "processor ready"))

	// A failure is a JSON record too: send to topics that do not exist.
	code, _, stderr = runSub(t, "send", "stock.set", "--brokers", brokers, "--topic-prefix", "nothing-here", "--sku", "S", "--on-hand", "1")
	assert.Equal(t, exitNoResult, code)
	recs = jsonLines(t, stderr)
	require.Len(t, recs, 1)
	assert.Equal(t, "ERROR", recs[0]["level"])
	assert.Equal(t, "reservations send failed", recs[0]["msg"])
	assert.Contains(t, recs[0]["err"], "topic nothing-here.commands does not exist")
	assert.EqualValues(t, exitNoResult, recs[0]["exit_code"])

	// serve failing at start (no such topics) ends with an error record.
	code, _, stderr = runSub(t, "serve", "--brokers", brokers, "--topic-prefix", "missing", "--http-addr", "127.0.0.1:0",
		"--state-dir", t.TempDir())
	assert.Equal(t, exitFailure, code)
	recs = jsonLines(t, stderr)
	last := recs[len(recs)-1]
	assert.Equal(t, "reservations serve failed", last["msg"])
	assert.Contains(t, last["err"], "topic is missing: missing.commands")

	// verify: the report stays text on stdout, the log is JSON.
	code, stdout, stderr := runSub(t, "verify", "--brokers", brokers, "--topic-prefix", prefix, "--log-level", "info")
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "OK: no mismatch")
	jsonLines(t, stderr)

	// Text is the default.
	t.Setenv("RESERVATIONS_LOG_FORMAT", "")
	code, _, stderr = runSub(t, "verify", "--brokers", brokers, "--topic-prefix", prefix, "--log-level", "info")
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stderr, `level=INFO msg="kafka connection"`)
	assert.NotContains(t, stderr, `{"time"`)
}

// TestProgressJSON: with --log-format json, the progress of verify and
// replay is JSON records too.
func TestProgressJSON(t *testing.T) {
	var buf bytes.Buffer
	c := &cli{stderr: &buf}
	p := c.newProgress("replay", logFlags{Format: logFormatJSON, Level: 8}) // printed whatever the level
	now := p.started
	p.now = func() time.Time { return now }
	now = now.Add(2 * time.Second)
	p.update(50, 200)
	recs := jsonLines(t, buf.String())
	require.Len(t, recs, 1)
	assert.Equal(t, "progress", recs[0]["msg"])
	assert.Equal(t, "replay", recs[0]["what"])
	assert.EqualValues(t, 25, recs[0]["percent"])
	assert.EqualValues(t, 50, recs[0]["done"])
	assert.EqualValues(t, 200, recs[0]["total"])
	assert.EqualValues(t, 25, recs[0]["records_per_second"])
	assert.EqualValues(t, 6, recs[0]["eta_seconds"], "150 left at 25/s")
}
