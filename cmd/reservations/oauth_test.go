package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/kafkaauth/kafkaauthtest"
	"github.com/reservations/reservations/schemas"
)

const (
	oauthToken = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXNlcnZhdGlvbnMifQ.dG9rZW4"
	oauthWrong = "eyJhbGciOiJSUzI1NiJ9.ZXhwaXJlZA.d3Jvbmc"
)

// TestKafkaOAuthBearer runs serve and send against a broker that requires
// SASL OAUTHBEARER, the token read from RESERVATIONS_KAFKA_OAUTH_TOKEN_FILE:
// the processor decides a command end to end; a wrong token (as a flag)
// stops send at once with a message about the token; the token never shows.
func TestKafkaOAuthBearer(t *testing.T) {
	oc := kafkaauthtest.NewOAuthCluster(t, oauthToken)
	brokers := strings.Join(oc.Brokers, ",")
	env := envMap("RESERVATIONS_BROKERS", brokers, "RESERVATIONS_KAFKA_SASL_MECHANISM", "OAUTHBEARER",
		"RESERVATIONS_KAFKA_OAUTH_TOKEN_FILE", writeSecret(t, oauthToken+"\n"))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serve := &devProcess{cancel: cancel, done: make(chan int, 1), stdout: new(syncBuffer), stderr: new(syncBuffer)}
	go func() {
		serve.done <- (&cli{stdout: serve.stdout, stderr: serve.stderr, lookupEnv: env}).run(ctx, []string{"serve",
			"--create-topics", "--partitions", "2", "--replication", "1", "--state-dir", t.TempDir(), "--http-addr", httpAddr,
			"--commit-interval", "20ms", "--log-level", "info"})
	}()
	t.Cleanup(func() { serve.stop(t) })
	waitReady(t, serve, httpAddr, 2)
	assert.Contains(t, serve.stderr.String(), `security="SASL OAUTHBEARER over plaintext"`)
	assert.Contains(t, serve.stderr.String(), "kafka.oauth_token=[redacted]")

	var stdout, stderr syncBuffer
	code := (&cli{stdout: &stdout, stderr: &stderr, lookupEnv: env}).run(context.Background(),
		[]string{"send", "stock.set", "--sku", "SKU-1", "--on-hand", "4", "--timeout", "30s"})
	require.Equal(t, exitOK, code, stderr.String())
	var res schemas.Result
	require.NoError(t, json.Unmarshal([]byte(stdout.String()), &res))
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	for _, tok := range oc.Tokens() {
		assert.Equal(t, oauthToken, tok, "every client authenticated with the token of the file")
	}

	// A wrong token given as a flag wins over the file, and fails fast.
	started := time.Now()
	stdout, stderr = syncBuffer{}, syncBuffer{}
	code = (&cli{stdout: &stdout, stderr: &stderr, lookupEnv: env}).run(context.Background(),
		[]string{"send", "stock.set", "--sku", "SKU-1", "--on-hand", "5", "--timeout", "60s", "--kafka-oauth-token", oauthWrong})
	assert.Equal(t, exitNoResult, code)
	assert.Contains(t, stderr.String(), "authentication failed: check the token")
	assert.Less(t, time.Since(started), 30*time.Second)

	require.Equal(t, exitOK, serve.stop(t), serve.stderr.String())
	for _, out := range []string{serve.stdout.String(), serve.stderr.String(), stdout.String(), stderr.String()} {
		assert.NotContains(t, out, oauthToken)
		assert.NotContains(t, out, oauthWrong)
	}
}

// TestKafkaOAuthBearerUsage: settings that cannot work exit 2 naming them.
func TestKafkaOAuthBearerUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"no token", nil, []string{"verify", "--kafka-sasl-mechanism", "OAUTHBEARER"},
			[]string{"invalid --kafka-oauth-token (RESERVATIONS_KAFKA_OAUTH_TOKEN): required with SASL mechanism OAUTHBEARER"}},
		{"user and password with a token", []string{"RESERVATIONS_KAFKA_OAUTH_TOKEN", oauthToken},
			[]string{"replay", "--to", "badger", "--kafka-sasl-mechanism", "OAUTHBEARER", "--kafka-user", "u", "--kafka-password", "p"},
			[]string{"invalid --kafka-user (RESERVATIONS_KAFKA_USER): not used with SASL mechanism OAUTHBEARER",
				"invalid --kafka-password (RESERVATIONS_KAFKA_PASSWORD): not used with SASL mechanism OAUTHBEARER"}},
		{"token without mechanism", []string{"RESERVATIONS_KAFKA_OAUTH_TOKEN_FILE", writeSecret(t, oauthToken)},
			[]string{"serve", "--brokers", "b:1"},
			[]string{"invalid RESERVATIONS_KAFKA_OAUTH_TOKEN_FILE (--kafka-oauth-token): set, but no SASL mechanism is (set --kafka-sasl-mechanism)"}},
		{"token with quotes", []string{"RESERVATIONS_KAFKA_OAUTH_TOKEN", `"` + oauthToken + `"`},
			[]string{"send", "stock.set", "--kafka-sasl-mechanism", "OAUTHBEARER"},
			[]string{"invalid RESERVATIONS_KAFKA_OAUTH_TOKEN (--kafka-oauth-token): not a bearer token"}},
		{"token and its file", []string{"RESERVATIONS_KAFKA_OAUTH_TOKEN", oauthToken, "RESERVATIONS_KAFKA_OAUTH_TOKEN_FILE", writeSecret(t, oauthToken)},
			[]string{"sink", "--pg-dsn", "postgres://x@h/db"},
			[]string{"RESERVATIONS_KAFKA_OAUTH_TOKEN and RESERVATIONS_KAFKA_OAUTH_TOKEN_FILE are both set (--kafka-oauth-token)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(envMap(tc.env...), tc.args...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, stdout)
			for _, w := range tc.want {
				assert.Contains(t, stderr, w)
			}
			assert.NotContains(t, stderr, oauthToken)
		})
	}
}
