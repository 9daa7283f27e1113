package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// envMap is an environment for tests.
func envMap(kv ...string) func(string) (string, bool) {
	m := make(map[string]string)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// runCLI runs the program with env as its whole environment.
func runCLI(env func(string) (string, bool), args ...string) (code int, stdout, stderr string) {
	var out, errw bytes.Buffer
	c := &cli{stdout: &out, stderr: &errw, lookupEnv: env}
	code = c.run(context.Background(), args)
	return code, out.String(), errw.String()
}

func TestEnvName(t *testing.T) {
	assert.Equal(t, "RESERVATIONS_KAFKA_PORT", envName("kafka-port"))
	assert.Equal(t, "RESERVATIONS_EXPECTED_ON_HAND", envName("expected-on-hand"))
	assert.Equal(t, "RESERVATIONS_BROKERS", envName("brokers"))
}

func TestPrecedenceDefaultEnvFlag(t *testing.T) {
	parse := func(env func(string) (string, bool), args ...string) (devConfig, *settings) {
		t.Helper()
		var cfg devConfig
		s := newSettings("dev")
		cfg.register(s)
		pos, err := s.Parse(args, env)
		require.NoError(t, err)
		require.Empty(t, pos)
		return cfg, s
	}

	// Defaults.
	cfg, s := parse(envMap())
	assert.Equal(t, 9092, cfg.KafkaPort)
	assert.Equal(t, "./data", cfg.DataDir)
	assert.Equal(t, 12, cfg.Partitions)
	assert.Equal(t, "reservations", cfg.TopicPrefix)
	assert.Equal(t, "127.0.0.1:8080", cfg.HTTPAddr)
	assert.Equal(t, slog.LevelInfo, cfg.Log.Level)
	assert.Equal(t, 50*time.Millisecond, cfg.CommitInterval)
	assert.Equal(t, 24*time.Hour, cfg.DedupeWindow)
	assert.Equal(t, int64(1), cfg.MaxExtensions)
	assert.Equal(t, fromDefault, s.Source("kafka-port"))

	// The environment overrides the defaults; an empty variable counts as unset.
	env := envMap("RESERVATIONS_KAFKA_PORT", "19092", "RESERVATIONS_LOG_LEVEL", "debug",
		"RESERVATIONS_DEDUPE_WINDOW", "2h", "RESERVATIONS_DATA_DIR", "", "RESERVATIONS_MAX_EXTENSIONS", "0")
	cfg, s = parse(env)
	assert.Equal(t, 19092, cfg.KafkaPort)
	assert.Equal(t, slog.LevelDebug, cfg.Log.Level)
	assert.Equal(t, 2*time.Hour, cfg.DedupeWindow)
	assert.Equal(t, int64(0), cfg.MaxExtensions)
	assert.Equal(t, "./data", cfg.DataDir)
	assert.Equal(t, fromEnv, s.Source("kafka-port"))

	// A flag wins over the environment, in both spellings and positions.
	cfg, s = parse(env, "--kafka-port", "29092", "-log-level=warn", "--max-extensions=3")
	assert.Equal(t, 29092, cfg.KafkaPort)
	assert.Equal(t, slog.LevelWarn, cfg.Log.Level)
	assert.Equal(t, int64(3), cfg.MaxExtensions)
	assert.Equal(t, 2*time.Hour, cfg.DedupeWindow, "env still applies to flags not given")
	assert.Equal(t, fromFlag, s.Source("kafka-port"))

	// Lists and booleans.
	var scfg serveConfig
	ss := newSettings("serve")
	scfg.register(ss)
	_, err := ss.Parse([]string{"--create-topics"}, envMap("RESERVATIONS_BROKERS", " a:1, b:2 ,", "RESERVATIONS_CREATE_TOPICS", "false"))
	require.NoError(t, err)
	assert.Equal(t, []string{"a:1", "b:2"}, scfg.Brokers)
	assert.True(t, scfg.CreateTopics)
}

func TestPositionalArgumentsInterspersed(t *testing.T) {
	var cfg sendConfig
	s := newSettings("send")
	cfg.register(s)
	pos, err := s.Parse([]string{"--sku", "A", "reserve", "--qty", "2", "--", "--x"}, envMap())
	require.NoError(t, err)
	assert.Equal(t, []string{"reserve", "--x"}, pos)
	assert.Equal(t, "A", cfg.SKU)
	require.NotNil(t, cfg.Qty)
	assert.Equal(t, int64(2), *cfg.Qty)
}

func TestInvalidSettingsExit2NamingTheSetting(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"flag not an integer", nil, []string{"dev", "--kafka-port", "x"}, `invalid value "x" for --kafka-port (RESERVATIONS_KAFKA_PORT): want an integer`},
		{"env not an integer", []string{"RESERVATIONS_PARTITIONS", "many"}, []string{"dev"}, `invalid value "many" for RESERVATIONS_PARTITIONS (--partitions): want an integer`},
		{"env not a duration", []string{"RESERVATIONS_COMMIT_INTERVAL", "5"}, []string{"serve", "--brokers", "b:1"}, `RESERVATIONS_COMMIT_INTERVAL (--commit-interval): want a duration`},
		{"env not a bool", []string{"RESERVATIONS_CREATE_TOPICS", "maybe"}, []string{"serve", "--brokers", "b:1"}, `RESERVATIONS_CREATE_TOPICS (--create-topics): want true or false`},
		{"bad log level", nil, []string{"dev", "--log-level", "loud"}, `--log-level (RESERVATIONS_LOG_LEVEL): want debug, info, warn or error`},
		{"port out of range", nil, []string{"dev", "--kafka-port", "70000"}, `invalid --kafka-port (RESERVATIONS_KAFKA_PORT): 70000: want 0..65535`},
		{"partitions from env out of range", []string{"RESERVATIONS_PARTITIONS", "0"}, []string{"dev"}, `invalid RESERVATIONS_PARTITIONS (--partitions): 0: want 1..10000`},
		{"dedupe window too short", nil, []string{"dev", "--dedupe-window", "30s"}, `invalid --dedupe-window (RESERVATIONS_DEDUPE_WINDOW): 30s: must be >= 1m`},
		{"negative extensions", nil, []string{"dev", "--max-extensions", "-1"}, `--max-extensions (RESERVATIONS_MAX_EXTENSIONS): -1: must be >= 0`},
		{"bad http addr", nil, []string{"dev", "--http-addr", "8080"}, `invalid --http-addr (RESERVATIONS_HTTP_ADDR)`},
		{"advertised addr not host:port", nil, []string{"dev", "--advertised-addr", "pod-1"}, `invalid --advertised-addr (RESERVATIONS_ADVERTISED_ADDR): "pod-1" is not host:port`},
		{"advertised addr a wildcard", []string{"RESERVATIONS_ADVERTISED_ADDR", "0.0.0.0:8080"}, []string{"serve", "--brokers", "b:1"},
			`invalid RESERVATIONS_ADVERTISED_ADDR (--advertised-addr): "0.0.0.0:8080": want a host name or address that others can reach, not "0.0.0.0"`},
		{"advertised addr without port", nil, []string{"serve", "--brokers", "b:1", "--advertised-addr", "pod-1:0"}, `invalid --advertised-addr (RESERVATIONS_ADVERTISED_ADDR): "pod-1:0": want the port others reach`},
		{"serve needs brokers", nil, []string{"serve"}, `--brokers (RESERVATIONS_BROKERS) is required`},
		{"unknown flag", nil, []string{"dev", "--nope"}, `flag provided but not defined: -nope`},
		{"stray argument", nil, []string{"dev", "extra"}, `unexpected argument "extra"`},
		{"send bad timeout", nil, []string{"send", "stock.set", "--timeout", "0s"}, `invalid --timeout (RESERVATIONS_TIMEOUT): 0s: must be > 0`},
		{"send bad qty", nil, []string{"send", "reserve", "--qty", "two"}, `invalid value "two" for --qty (RESERVATIONS_QTY): want an integer`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(envMap(tc.env...), tc.args...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, tc.want)
			assert.Contains(t, stderr, "Run 'reservations "+tc.args[0]+" -h' for usage.")
		})
	}
}

func TestAllValidationErrorsReported(t *testing.T) {
	code, _, stderr := runCLI(envMap(), "dev", "--partitions", "0", "--max-batch", "0")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "reservations dev: invalid --partitions")
	assert.Contains(t, stderr, "reservations dev: invalid --max-batch")
}

func TestUsageAndHelp(t *testing.T) {
	code, _, stderr := runCLI(envMap())
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "Subcommands:")

	code, _, stderr = runCLI(envMap(), "frobnicate")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, `unknown subcommand "frobnicate"`)
	assert.Contains(t, stderr, "Subcommands:")

	// There is no bench subcommand (make bench runs the harness).
	assert.Nil(t, lookupCommand("bench"))
	code, _, _ = runCLI(envMap(), "bench")
	assert.Equal(t, exitUsage, code, "bench")

	code, stdout, _ := runCLI(envMap(), "--help")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, stdout, "send <type>")
	assert.NotContains(t, stdout, "config-table", "hidden")

	for _, cmd := range []string{"dev", "serve", "send"} {
		code, stdout, _ = runCLI(envMap(), cmd, "-h")
		assert.Equal(t, exitOK, code, cmd)
		assert.Contains(t, stdout, "Usage: reservations "+cmd)
		assert.Contains(t, stdout, "RESERVATIONS_")
		code, stdout2, _ := runCLI(envMap(), "help", cmd)
		assert.Equal(t, exitOK, code, cmd)
		assert.Equal(t, stdout, stdout2)
	}
}

func TestConfigTable(t *testing.T) {
	code, stdout, _ := runCLI(envMap(), "config-table")
	require.Equal(t, exitOK, code)
	assert.Contains(t, stdout, "| flag | env var | default | description |")
	for _, row := range []string{
		"| `--kafka-port` | `RESERVATIONS_KAFKA_PORT` | `9092` |",
		"| `--data-dir` | `RESERVATIONS_DATA_DIR` | `./data` |",
		"| `--partitions` | `RESERVATIONS_PARTITIONS` | `12` |",
		"| `--topic-prefix` | `RESERVATIONS_TOPIC_PREFIX` | `reservations` |",
		"| `--http-addr` | `RESERVATIONS_HTTP_ADDR` | `127.0.0.1:8080` |",
		"| `--log-level` | `RESERVATIONS_LOG_LEVEL` | `info` |",
		"| `--dedupe-window` | `RESERVATIONS_DEDUPE_WINDOW` | `24h` |",
		"| `--brokers` | `RESERVATIONS_BROKERS` | required |",
		"| `--create-topics` | `RESERVATIONS_CREATE_TOPICS` | `false` |",
		"| `--state-dir` | `RESERVATIONS_STATE_DIR` | `./data/state` |",
		"| `--advertised-addr` | `RESERVATIONS_ADVERTISED_ADDR` | --http-addr unless its host is 0.0.0.0, :: or empty |",
		"| `--kafka-password` | `RESERVATIONS_KAFKA_PASSWORD` | none |",
		"| `--only-partitions` | `RESERVATIONS_ONLY_PARTITIONS` | all |",
		"| `--brokers` | `RESERVATIONS_BROKERS` | `127.0.0.1:9092` |",
		"| `--timeout` | `RESERVATIONS_TIMEOUT` | `10s` |",
		"| `--threshold` | `RESERVATIONS_THRESHOLD` | none |",
	} {
		assert.Contains(t, stdout, row)
	}
	// Every registered setting of every listed subcommand is in the table.
	for _, cmd := range commands() {
		s, _ := cmd.setup()
		for _, st := range s.Settings() {
			assert.Contains(t, stdout, "`--"+st.Flag+"` | `"+st.Env+"`", cmd.name)
		}
	}
	// Markdown-safe: no raw angle brackets (they would vanish as HTML).
	for _, line := range strings.Split(stdout, "\n") {
		assert.NotRegexp(t, `(^|[^\\])<`, line)
	}

	code, stdout, _ = runCLI(envMap(), "config-table", "send")
	require.Equal(t, exitOK, code)
	assert.Contains(t, stdout, "reservations send")
	assert.NotContains(t, stdout, "reservations dev")

	code, _, _ = runCLI(envMap(), "config-table", "nope")
	assert.Equal(t, exitUsage, code)
}

// TestConfigurationDocMatchesConfigTable: every flag row of the tables in
// docs/CONFIGURATION.md is a row `reservations config-table` prints, every
// setting is documented there, and the document's links to its own headings
// resolve.
func TestConfigurationDocMatchesConfigTable(t *testing.T) {
	const doc = "docs/CONFIGURATION.md"
	b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(doc)))
	require.NoError(t, err)
	text := string(b)
	code, table, _ := runCLI(envMap(), "config-table")
	require.Equal(t, exitOK, code)
	generated := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		generated[line] = true
	}
	rows := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "| `--") {
			rows++
			assert.True(t, generated[line], "%s: row differs from `reservations config-table`:\n%s", doc, line)
		}
	}
	assert.Greater(t, rows, 40)
	for _, cmd := range commands() {
		s, _ := cmd.setup()
		for _, st := range s.Settings() {
			documented := regexp.MustCompile("`--" + regexp.QuoteMeta(st.Flag) + "[` ]").MatchString(text)
			assert.True(t, documented, "reservations %s --%s is not in %s", cmd.name, st.Flag, doc)
		}
	}
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") {
			h := strings.ToLower(drop.ReplaceAllString(strings.TrimSpace(strings.TrimLeft(line, "#")), ""))
			anchors[strings.ReplaceAll(h, " ", "-")] = true
		}
	}
	for _, m := range regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatch(text, -1) {
		assert.True(t, anchors[m[1]], "%s links to #%s, which is no heading", doc, m[1])
	}
}
