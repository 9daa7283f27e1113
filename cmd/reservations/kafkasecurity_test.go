package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
)

const (
	saslUser     = "admin"
	saslPassword = "secret"
	saslWrong    = "wrong-pa55word"
)

// runSub runs a subcommand through the program's entry point (the process
// environment included) with a deadline, and returns its exit code and output.
func runSub(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	t.Logf("reservations %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

// noPassword asserts that no output holds the password or the wrong one.
func noPassword(t *testing.T, outputs ...string) {
	t.Helper()
	for _, out := range outputs {
		assert.NotContains(t, out, saslPassword)
		assert.NotContains(t, out, saslWrong)
	}
}

// TestKafkaSASL runs serve, send, verify, replay and sink against a kfake
// broker that requires SASL SCRAM-SHA-256: with the right password (from
// RESERVATIONS_KAFKA_PASSWORD, as the help recommends) everything works end
// to end, including the interactive queries of serve; with a wrong one (or
// none) each subcommand stops at once with a message that says why and never
// shows a password.
func TestKafkaSASL(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", saslUser, saslPassword))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	t.Setenv(envName("kafka-password"), saslPassword)
	sasl := []string{"--brokers", brokers, "--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-user", saslUser}
	wrong := append(append([]string{}, sasl...), "--kafka-password", saslWrong) // a flag wins over the environment

	// serve creates the topics and runs the processor over SASL.
	const partitions = 2
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serve := &devProcess{cancel: cancel, done: make(chan int, 1), stdout: new(syncBuffer), stderr: new(syncBuffer)}
	go func() {
		serve.done <- run(ctx, append([]string{"serve", "--create-topics", "--partitions", "2", "--replication", "1",
			"--state-dir", t.TempDir(), "--http-addr", httpAddr, "--commit-interval", "20ms", "--log-level", "info"}, sasl...),
			serve.stdout, serve.stderr)
	}()
	t.Cleanup(func() { serve.stop(t) })
	waitReady(t, serve, httpAddr, partitions)
	assert.Contains(t, serve.stderr.String(), `security="SASL SCRAM-SHA-256 over plaintext"`)
	assert.Contains(t, serve.stderr.String(), "kafka.user=admin kafka.password=[redacted]", "the settings are logged, redacted")
	assert.Contains(t, serve.stderr.String(), "advertised_addr="+httpAddr)

	// send gets the result from serve.
	code, stdout, stderr := runSub(t, append([]string{"send", "stock.set", "--sku", "SKU-1", "--on-hand", "10",
		"--id", "sasl-set-1", "--timeout", "30s"}, sasl...)...)
	require.Equal(t, exitOK, code, stderr)
	var res schemas.Result
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	assert.Equal(t, &schemas.StockView{OnHand: 10, Reserved: 0, Available: 10}, res.Stock)
	code, body, err := httpGet("http://" + httpAddr + "/v1/stock/SKU-1")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, `"on_hand":10`)

	// A wrong password: send fails at once, before its timeout.
	started := time.Now()
	code, stdout, stderr = runSub(t, append([]string{"send", "stock.set", "--sku", "SKU-1", "--on-hand", "11",
		"--timeout", "60s"}, wrong...)...)
	assert.Equal(t, exitNoResult, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "wrong user, password or SASL mechanism")
	assert.Contains(t, stderr, `SASL SCRAM-SHA-256 over plaintext, user "admin"`)
	assert.Less(t, time.Since(started), 30*time.Second)
	noPassword(t, stdout, stderr)

	// A wrong password, or none, stops serve with exit 1.
	for name, args := range map[string][]string{
		"wrong password": wrong,
		"no SASL":        {"--brokers", brokers, "--kafka-password="}, // empty: RESERVATIONS_KAFKA_PASSWORD not read
	} {
		code, stdout, stderr = runSub(t, append([]string{"serve", "--state-dir", t.TempDir(), "--http-addr", "127.0.0.1:0"}, args...)...)
		assert.Equal(t, exitFailure, code, name)
		assert.Contains(t, stderr, "reservations serve: kafka connection check (settings --brokers, --kafka-*): connect to kafka "+brokers, name)
		assert.Contains(t, stderr, "the broker closed the connection", name)
		noPassword(t, stdout, stderr)
	}

	// verify and replay read the changelog over SASL (their admin clients,
	// the changelog reader, the processor's restore clients).
	code, stdout, stderr = runSub(t, append([]string{"verify"}, sasl...)...)
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "OK: no mismatch")
	code, stdout, stderr = runSub(t, append([]string{"replay", "--to", "badger", "--state-dir", t.TempDir()}, sasl...)...)
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "replay --to badger: done, partitions 0,1")
	code, stdout, stderr = runSub(t, append([]string{"verify"}, wrong...)...)
	assert.Equal(t, exitIncomplete, code)
	assert.Contains(t, stderr, "no verdict: kafka connection check")
	noPassword(t, stdout, stderr)
	code, stdout, stderr = runSub(t, append([]string{"replay", "--to", "badger", "--state-dir", t.TempDir()}, wrong...)...)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, stderr, "kafka connection check")
	noPassword(t, stdout, stderr)

	// The sink: a wrong password stops it before it touches Postgres.
	code, stdout, stderr = runSub(t, append([]string{"sink", "--pg-dsn", "postgres://x@127.0.0.1:1/x", "--http-addr", "127.0.0.1:0"}, wrong...)...)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, stderr, "reservations sink: kafka connection check")
	noPassword(t, stdout, stderr)

	// With the right password replay --to postgres and the sink fill the
	// tables over SASL.
	db := readerDatabase(t, pgtest.NewDatabase(t))
	code, _, stderr = runSub(t, append([]string{"replay", "--to", "postgres", "--pg-dsn", db.DSN}, sasl...)...)
	require.Equal(t, exitOK, code, stderr)
	var onHand int64
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT on_hand FROM stock WHERE sku = 'SKU-1'`).Scan(&onHand))
	assert.Equal(t, int64(10), onHand)

	sinkAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	var sout, serr syncBuffer
	sdone := make(chan int, 1)
	go func() {
		sdone <- run(sctx, append([]string{"sink", "--pg-dsn", pgtest.NewDatabase(t).DSN, "--http-addr", sinkAddr,
			"--batch-wait", "5ms"}, sasl...), &sout, &serr)
	}()
	eventually(t, 60*time.Second, "sink ready over SASL", func() bool {
		code, _, err := httpGet("http://" + sinkAddr + "/readyz")
		return err == nil && code == http.StatusOK
	})
	scancel()
	select {
	case code := <-sdone:
		assert.Equal(t, exitOK, code, serr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("sink did not stop")
	}
	noPassword(t, sout.String(), serr.String())

	require.Equal(t, exitOK, serve.stop(t), serve.stderr.String())
	noPassword(t, serve.stdout.String(), serve.stderr.String())
}

// TestKafkaSecurityFlags: every subcommand that talks to a Kafka cluster
// takes the same security flags, dev (plaintext embedded broker) none; the
// password's default and help never show a value.
func TestKafkaSecurityFlags(t *testing.T) {
	want := []string{"kafka-tls", "kafka-ca-file", "kafka-cert-file", "kafka-key-file",
		"kafka-tls-insecure-skip-verify", "kafka-sasl-mechanism", "kafka-user", "kafka-password", "kafka-oauth-token"}
	for _, cmd := range commands() {
		s, _ := cmd.setup()
		var got []string
		for _, st := range s.Settings() {
			if strings.HasPrefix(st.Flag, "kafka-") && st.Flag != "kafka-port" {
				got = append(got, st.Flag)
			}
		}
		switch cmd.name {
		case "serve", "sink", "verify", "replay", "send":
			assert.Equal(t, want, got, cmd.name)
		default:
			assert.Empty(t, got, cmd.name)
		}
	}
	code, stdout, _ := runCLI(envMap(envName("kafka-password"), saslPassword), "serve", "-h")
	require.Equal(t, exitOK, code)
	assert.Contains(t, stdout, "RESERVATIONS_KAFKA_PASSWORD")
	assert.NotContains(t, stdout, saslPassword)
}

// TestKafkaSecurityUsage: settings that cannot work exit 2 naming the flag
// (or the environment variable it came from), never showing the password.
func TestKafkaSecurityUsage(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"unknown mechanism", nil, []string{"serve", "--brokers", "b:1", "--kafka-sasl-mechanism", "GSSAPI"},
			[]string{`invalid --kafka-sasl-mechanism (RESERVATIONS_KAFKA_SASL_MECHANISM): "GSSAPI": want one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512`}},
		{"mechanism without credentials", nil, []string{"sink", "--pg-dsn", "postgres://x@h/db", "--kafka-sasl-mechanism", "PLAIN"},
			[]string{"invalid --kafka-user (RESERVATIONS_KAFKA_USER): required with SASL mechanism PLAIN",
				"invalid --kafka-password (RESERVATIONS_KAFKA_PASSWORD): required with SASL mechanism PLAIN"}},
		{"credentials without mechanism", []string{"RESERVATIONS_KAFKA_PASSWORD", saslPassword}, []string{"send", "stock.set", "--kafka-user", "u"},
			[]string{"invalid --kafka-user (RESERVATIONS_KAFKA_USER): set, but no SASL mechanism is (set --kafka-sasl-mechanism)",
				"invalid RESERVATIONS_KAFKA_PASSWORD (--kafka-password): set, but no SASL mechanism is (set --kafka-sasl-mechanism)"}},
		{"ca file without tls", nil, []string{"verify", "--kafka-ca-file", notPEM},
			[]string{"invalid --kafka-ca-file (RESERVATIONS_KAFKA_CA_FILE): " + notPEM + " set, but TLS is off (set --kafka-tls)"}},
		{"missing ca file", nil, []string{"replay", "--to", "badger", "--kafka-tls", "--kafka-ca-file", filepath.Join(dir, "nope.pem")},
			[]string{"invalid --kafka-ca-file (RESERVATIONS_KAFKA_CA_FILE): stat "}},
		{"ca file without a certificate", nil, []string{"serve", "--brokers", "b:1", "--kafka-tls", "--kafka-ca-file", notPEM},
			[]string{"invalid --kafka-ca-file (RESERVATIONS_KAFKA_CA_FILE): " + notPEM + " holds no PEM certificate"}},
		{"cert without key", nil, []string{"serve", "--brokers", "b:1", "--kafka-tls", "--kafka-cert-file", notPEM},
			[]string{"invalid --kafka-key-file (RESERVATIONS_KAFKA_KEY_FILE): required with --kafka-cert-file (mutual TLS needs both)"}},
		{"insecure without tls", []string{"RESERVATIONS_KAFKA_TLS_INSECURE_SKIP_VERIFY", "true"}, []string{"send", "stock.set"},
			[]string{"invalid RESERVATIONS_KAFKA_TLS_INSECURE_SKIP_VERIFY (--kafka-tls-insecure-skip-verify): set, but TLS is off (set --kafka-tls)"}},
		{"not a bool", []string{"RESERVATIONS_KAFKA_TLS", "yes please"}, []string{"verify"},
			[]string{`invalid value "yes please" for RESERVATIONS_KAFKA_TLS (--kafka-tls): want true or false`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(envMap(tc.env...), tc.args...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, stdout)
			for _, w := range tc.want {
				assert.Contains(t, stderr, w)
			}
			assert.Contains(t, stderr, "Run 'reservations "+tc.args[0]+" -h' for usage.")
			noPassword(t, stderr)
		})
	}
	// dev has no such flags: its embedded broker is plaintext.
	code, _, stderr := runCLI(envMap(), "dev", "--kafka-tls")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "flag provided but not defined: -kafka-tls")
}
