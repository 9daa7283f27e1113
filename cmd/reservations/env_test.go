package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
)

// TestSinkHTTPAddrPrecedence: the sink's admin address comes from the flag,
// else RESERVATIONS_SINK_HTTP_ADDR, else RESERVATIONS_HTTP_ADDR (the
// processor's variable, for environments holding only the sink's settings),
// else 127.0.0.1:8081; serve and dev never read the sink's variable.
func TestSinkHTTPAddrPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cmd      string
		env      []string
		args     []string
		want     string
		wantName string // how messages name the setting
	}{
		{"sink default", "sink", nil, nil, "127.0.0.1:8081", "--http-addr (RESERVATIONS_SINK_HTTP_ADDR)"},
		{"sink from the shared name alone", "sink", []string{"RESERVATIONS_HTTP_ADDR", "0.0.0.0:8080"}, nil,
			"0.0.0.0:8080", "RESERVATIONS_HTTP_ADDR (--http-addr)"},
		{"sink from its own name", "sink", []string{"RESERVATIONS_SINK_HTTP_ADDR", ":9081"}, nil,
			":9081", "RESERVATIONS_SINK_HTTP_ADDR (--http-addr)"},
		{"sink: its own name wins over the shared one", "sink",
			[]string{"RESERVATIONS_HTTP_ADDR", ":8080", "RESERVATIONS_SINK_HTTP_ADDR", ":8081"}, nil,
			":8081", "RESERVATIONS_SINK_HTTP_ADDR (--http-addr)"},
		{"sink: an empty own name counts as unset", "sink",
			[]string{"RESERVATIONS_HTTP_ADDR", ":8080", "RESERVATIONS_SINK_HTTP_ADDR", ""}, nil,
			":8080", "RESERVATIONS_HTTP_ADDR (--http-addr)"},
		{"sink: the flag wins over both", "sink",
			[]string{"RESERVATIONS_HTTP_ADDR", ":8080", "RESERVATIONS_SINK_HTTP_ADDR", ":8081"}, []string{"--http-addr", ":7000"},
			":7000", "--http-addr (RESERVATIONS_SINK_HTTP_ADDR)"},
		{"serve ignores the sink's name", "serve",
			[]string{"RESERVATIONS_HTTP_ADDR", ":8080", "RESERVATIONS_SINK_HTTP_ADDR", ":8081"}, nil,
			":8080", "RESERVATIONS_HTTP_ADDR (--http-addr)"},
		{"dev ignores the sink's name", "dev", []string{"RESERVATIONS_SINK_HTTP_ADDR", ":8081"}, nil,
			"127.0.0.1:8080", "--http-addr (RESERVATIONS_HTTP_ADDR)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := lookupCommand(tc.cmd)
			s, _ := cmd.setup()
			_, err := s.Parse(tc.args, envMap(tc.env...))
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.fs.Lookup("http-addr").Value.String())
			assert.Equal(t, tc.wantName, s.Name("http-addr"))
		})
	}

	// An invalid value names the variable it came from.
	code, _, stderr := runCLI(envMap("RESERVATIONS_HTTP_ADDR", ":8080", "RESERVATIONS_SINK_HTTP_ADDR", "8081",
		"RESERVATIONS_PG_DSN", "postgres://x@h/db"), "sink")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, `invalid RESERVATIONS_SINK_HTTP_ADDR (--http-addr): "8081" is not host:port`)
}

// TestEnvironmentVariablesMeanOneThing: across all subcommands, each
// environment variable sets one flag (a name shared by two subcommands has
// one meaning, so one environment can configure a whole deployment), and
// within a subcommand no two settings read the same variable (a _FILE
// variable included). The variables shared by several subcommands are
// listed: a new one fails here until someone decided that it means the same
// everywhere (or gave it a subcommand prefix, as RESERVATIONS_SINK_HTTP_ADDR).
func TestEnvironmentVariablesMeanOneThing(t *testing.T) {
	flagOf := map[string]string{}     // variable -> flag it sets
	users := map[string][]string{}    // variable -> subcommands reading it as their own
	fallback := map[string][]string{} // variable -> subcommands reading it as a fallback
	for _, cmd := range commands() {
		s, _ := cmd.setup()
		seen := map[string]string{}
		for _, st := range s.Settings() {
			own := map[string]bool{st.Env: true, st.Env + fileSuffix: st.Secret}
			for _, env := range st.envVars() {
				if prev, dup := seen[env]; dup {
					t.Errorf("reservations %s: %s is read by --%s and --%s", cmd.name, env, prev, st.Flag)
				}
				seen[env] = st.Flag
				if f, ok := flagOf[env]; ok && f != st.Flag {
					t.Errorf("%s sets --%s in one subcommand and --%s in reservations %s", env, f, st.Flag, cmd.name)
				}
				flagOf[env] = st.Flag
				if own[env] {
					users[env] = append(users[env], cmd.name)
				} else {
					fallback[env] = append(fallback[env], cmd.name)
				}
			}
		}
	}
	shared := map[string]string{}
	for env, cmds := range users {
		if len(cmds) > 1 {
			sort.Strings(cmds)
			shared[env] = strings.Join(cmds, " ")
		}
	}
	assert.Equal(t, map[string]string{
		"RESERVATIONS_ADVERTISED_ADDR":                "dev serve",
		"RESERVATIONS_ALLOW_OTHER_GROUPS":             "dev serve",
		"RESERVATIONS_CARTS":                          "dev serve",
		"RESERVATIONS_CART_GROUP":                     "dev serve",
		"RESERVATIONS_COMMIT_INTERVAL":                "dev serve",
		"RESERVATIONS_DEDUPE_WINDOW":                  "dev serve",
		"RESERVATIONS_GROUP":                          "dev serve",
		"RESERVATIONS_HTTP_ADDR":                      "dev serve", // the processor's admin listener; the sink's is RESERVATIONS_SINK_HTTP_ADDR
		"RESERVATIONS_INSTANCE_ID":                    "dev serve",
		"RESERVATIONS_STATIC_MEMBERSHIP":              "dev serve",
		"RESERVATIONS_LEAVE_GROUP_ON_SHUTDOWN":        "dev serve",
		"RESERVATIONS_SESSION_TIMEOUT":                "dev serve",
		"RESERVATIONS_STANDBY_REPLICAS":               "dev serve",
		"RESERVATIONS_STATE_CACHE_MB":                 "dev serve",
		"RESERVATIONS_MAX_BATCH":                      "dev serve",
		"RESERVATIONS_MAX_EXTENSIONS":                 "dev serve",
		"RESERVATIONS_PARTITIONS":                     "dev serve", // partitions of created topics (replay's list is ONLY_PARTITIONS)
		"RESERVATIONS_TRANSACTION_TIMEOUT":            "dev serve",
		"RESERVATIONS_STATE_DIR":                      "replay serve", // the processor's state folder, which replay --to badger rebuilds
		"RESERVATIONS_TOPIC_PREFIX":                   "dev replay send serve sink verify",
		"RESERVATIONS_LOG_FORMAT":                     "dev replay send serve sink verify",
		"RESERVATIONS_LOG_LEVEL":                      "dev replay serve sink verify",
		"RESERVATIONS_BROKERS":                        "replay send serve sink verify",
		"RESERVATIONS_PG_DSN":                         "audit dev replay sink verify", // the snapshot database
		"RESERVATIONS_PG_DSN_FILE":                    "audit dev replay sink verify",
		"RESERVATIONS_PG_SCHEMA":                      "audit dev replay sink verify", // the schema of the snapshot's tables
		"RESERVATIONS_KAFKA_TLS":                      "replay send serve sink verify",
		"RESERVATIONS_KAFKA_CA_FILE":                  "replay send serve sink verify",
		"RESERVATIONS_KAFKA_CERT_FILE":                "replay send serve sink verify",
		"RESERVATIONS_KAFKA_KEY_FILE":                 "replay send serve sink verify",
		"RESERVATIONS_KAFKA_TLS_INSECURE_SKIP_VERIFY": "replay send serve sink verify",
		"RESERVATIONS_KAFKA_SASL_MECHANISM":           "replay send serve sink verify",
		"RESERVATIONS_KAFKA_USER":                     "replay send serve sink verify",
		"RESERVATIONS_KAFKA_PASSWORD":                 "replay send serve sink verify",
		"RESERVATIONS_KAFKA_PASSWORD_FILE":            "replay send serve sink verify",
		"RESERVATIONS_KAFKA_OAUTH_TOKEN":              "replay send serve sink verify",
		"RESERVATIONS_KAFKA_OAUTH_TOKEN_FILE":         "replay send serve sink verify",
	}, shared)
	assert.Equal(t, map[string][]string{"RESERVATIONS_HTTP_ADDR": {"sink"}}, fallback)
	assert.Equal(t, []string{"sink"}, users[sinkHTTPAddrEnv])
}

// writeSecret writes a secret file as mounted secrets look: a trailing newline.
func writeSecret(t *testing.T, content string) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(name, []byte(content), 0o600))
	return name
}

// TestSecretFiles: RESERVATIONS_X_FILE reads a secret setting from a file
// (trailing newline trimmed); X and X_FILE both set is an error naming the
// setting; a file that cannot be read or is empty is an error naming the
// variable; the flag still wins; settings that are no secret have no _FILE
// variable.
func TestSecretFiles(t *testing.T) {
	const dsn = "postgres://app:pw-from-file@db:5432/inventory"
	dsnFile := writeSecret(t, dsn+"\n")
	crlfFile := writeSecret(t, dsn+"\r\n")
	pwFile := writeSecret(t, "kafka-Pa55\n")
	tokenFile := writeSecret(t, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n")
	emptyFile := writeSecret(t, "\n")
	missing := filepath.Join(t.TempDir(), "missing")

	for _, tc := range []struct {
		name    string
		cmd     string
		env     []string
		args    []string
		setting string
		want    string // the value; "" with wantErr
		wantErr string
		from    string // EnvFrom
	}{
		{"dsn from a file", "sink", []string{"RESERVATIONS_PG_DSN_FILE", dsnFile}, nil, "pg-dsn", dsn, "", "RESERVATIONS_PG_DSN_FILE"},
		{"windows line end trimmed", "verify", []string{"RESERVATIONS_PG_DSN_FILE", crlfFile}, nil, "pg-dsn", dsn, "", "RESERVATIONS_PG_DSN_FILE"},
		{"dsn of dev", "dev", []string{"RESERVATIONS_PG_DSN_FILE", dsnFile}, nil, "pg-dsn", dsn, "", "RESERVATIONS_PG_DSN_FILE"},
		{"dsn of replay", "replay", []string{"RESERVATIONS_PG_DSN_FILE", dsnFile}, nil, "pg-dsn", dsn, "", "RESERVATIONS_PG_DSN_FILE"},
		{"kafka password", "serve", []string{"RESERVATIONS_KAFKA_PASSWORD_FILE", pwFile}, nil, "kafka-password", "kafka-Pa55", "", "RESERVATIONS_KAFKA_PASSWORD_FILE"},
		{"oauth token", "send", []string{"RESERVATIONS_KAFKA_OAUTH_TOKEN_FILE", tokenFile}, nil, "kafka-oauth-token",
			"eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "", "RESERVATIONS_KAFKA_OAUTH_TOKEN_FILE"},
		{"the variable itself still works", "sink", []string{"RESERVATIONS_PG_DSN", dsn}, nil, "pg-dsn", dsn, "", "RESERVATIONS_PG_DSN"},
		{"an empty variable beside its file", "sink", []string{"RESERVATIONS_PG_DSN", "", "RESERVATIONS_PG_DSN_FILE", dsnFile}, nil,
			"pg-dsn", dsn, "", "RESERVATIONS_PG_DSN_FILE"},
		{"the flag wins over the file", "sink", []string{"RESERVATIONS_PG_DSN_FILE", dsnFile}, []string{"--pg-dsn", "postgres://flag@h/db"},
			"pg-dsn", "postgres://flag@h/db", "", ""},
		{"both set", "sink", []string{"RESERVATIONS_PG_DSN", dsn, "RESERVATIONS_PG_DSN_FILE", dsnFile}, nil, "pg-dsn", "",
			"RESERVATIONS_PG_DSN and RESERVATIONS_PG_DSN_FILE are both set (--pg-dsn): set only one of them", ""},
		{"both set, password", "replay", []string{"RESERVATIONS_KAFKA_PASSWORD", "x", "RESERVATIONS_KAFKA_PASSWORD_FILE", pwFile}, nil,
			"kafka-password", "", "RESERVATIONS_KAFKA_PASSWORD and RESERVATIONS_KAFKA_PASSWORD_FILE are both set (--kafka-password)", ""},
		{"missing file", "sink", []string{"RESERVATIONS_PG_DSN_FILE", missing}, nil, "pg-dsn", "",
			"invalid RESERVATIONS_PG_DSN_FILE (--pg-dsn): open " + missing + ": no such file or directory", ""},
		{"empty file", "verify", []string{"RESERVATIONS_PG_DSN_FILE", emptyFile}, nil, "pg-dsn", "",
			"invalid RESERVATIONS_PG_DSN_FILE (--pg-dsn): " + emptyFile + " is empty", ""},
		{"no _FILE for settings that are no secret", "sink", []string{"RESERVATIONS_BROKERS_FILE", dsnFile}, nil, "brokers",
			"127.0.0.1:9092", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := lookupCommand(tc.cmd).setup()
			_, err := s.Parse(tc.args, envMap(tc.env...))
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.NotContains(t, err.Error(), "pw-from-file")
				assert.NotContains(t, err.Error(), "kafka-Pa55")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.fs.Lookup(tc.setting).Value.String())
			assert.Equal(t, tc.from, s.EnvFrom(tc.setting))
		})
	}

	// Through the program: exit 2, the setting named, the secret not shown.
	code, stdout, stderr := runCLI(envMap("RESERVATIONS_PG_DSN", dsn, "RESERVATIONS_PG_DSN_FILE", dsnFile), "sink")
	assert.Equal(t, exitUsage, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "reservations sink: RESERVATIONS_PG_DSN and RESERVATIONS_PG_DSN_FILE are both set (--pg-dsn)")
	assert.NotContains(t, stderr, "pw-from-file")
	// A value from a file that is invalid is reported by the variable, without the value.
	bad := writeSecret(t, "not a dsn = = =\n")
	code, _, stderr = runCLI(envMap("RESERVATIONS_PG_DSN_FILE", bad), "verify")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "invalid RESERVATIONS_PG_DSN_FILE (--pg-dsn): not a PostgreSQL connection string")
	assert.NotContains(t, stderr, "not a dsn")

	// Help names both variables.
	code, stdout, _ = runCLI(envMap(), "sink", "-h")
	require.Equal(t, exitOK, code)
	assert.Contains(t, stdout, "--pg-dsn  RESERVATIONS_PG_DSN (or RESERVATIONS_PG_DSN_FILE)")
	assert.Contains(t, stdout, "--http-addr  RESERVATIONS_SINK_HTTP_ADDR, else RESERVATIONS_HTTP_ADDR")
}

// TestOneEnvironmentConfiguresServeSinkAndSend: one environment (an env
// file for the whole deployment) runs serve on the processor's admin
// address and the sink on its own, sends a command with send, and the
// command's state reaches Postgres; the secrets come from _FILE variables.
func TestOneEnvironmentConfiguresServeSinkAndSend(t *testing.T) {
	c := kafkatest.New(t)
	names := c.Topics(t, 2)
	db := readerDatabase(t, pgtest.NewDatabase(t))
	serveAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sinkAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	env := envMap(
		"RESERVATIONS_BROKERS", strings.Join(c.Brokers, ","),
		"RESERVATIONS_TOPIC_PREFIX", strings.TrimSuffix(names.Commands, ".commands"),
		"RESERVATIONS_HTTP_ADDR", serveAddr,
		"RESERVATIONS_SINK_HTTP_ADDR", sinkAddr,
		"RESERVATIONS_PG_DSN_FILE", writeSecret(t, db.DSN+"\n"),
		"RESERVATIONS_STATE_DIR", t.TempDir(),
		"RESERVATIONS_GROUP", names.Commands+"-group",
		"RESERVATIONS_CARTS", "false",
		"RESERVATIONS_COMMIT_INTERVAL", "20ms",
		"RESERVATIONS_BATCH_WAIT", "5ms",
		"RESERVATIONS_LOG_LEVEL", "info",
		"RESERVATIONS_TIMEOUT", "30s",
	)
	start := func(cmd string) *devProcess {
		ctx, cancel := context.WithCancel(context.Background())
		d := &devProcess{cancel: cancel, done: make(chan int, 1), stdout: new(syncBuffer), stderr: new(syncBuffer)}
		go func() { d.done <- (&cli{stdout: d.stdout, stderr: d.stderr, lookupEnv: env}).run(ctx, []string{cmd}) }()
		t.Cleanup(func() { d.stop(t) })
		return d
	}
	serve := start("serve")
	sink := start("sink")
	waitReady(t, serve, serveAddr, 2)
	eventually(t, 60*time.Second, "sink ready on its own address", func() bool {
		code, body, err := httpGet("http://" + sinkAddr + "/readyz")
		return err == nil && code == http.StatusOK && strings.Contains(body, `"sink":"ready"`)
	})
	assert.Contains(t, serve.stderr.String(), "http=http://"+serveAddr)
	assert.Contains(t, sink.stderr.String(), "http=http://"+sinkAddr)

	var stdout, stderr syncBuffer
	code := (&cli{stdout: &stdout, stderr: &stderr, lookupEnv: env}).run(context.Background(),
		[]string{"send", "stock.set", "--sku", "SKU-ENV", "--on-hand", "7"})
	require.Equal(t, exitOK, code, stderr.String())
	var res schemas.Result
	require.NoError(t, json.Unmarshal([]byte(stdout.String()), &res))
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	eventually(t, 30*time.Second, "row in postgres", func() bool {
		var onHand int64
		err := db.Pool.QueryRow(context.Background(), `SELECT on_hand FROM stock WHERE sku = 'SKU-ENV'`).Scan(&onHand)
		return err == nil && onHand == 7
	})
	assert.Equal(t, exitOK, sink.stop(t), sink.stderr.String())
	assert.Equal(t, exitOK, serve.stop(t), serve.stderr.String())
	assert.NotContains(t, sink.stderr.String(), "comes from RESERVATIONS_HTTP_ADDR")
}
