package kafkaauth

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var topicSeq atomic.Int64

const (
	user     = "admin"
	password = "s3cret-Pa55word"
	wrong    = "wrong-Pa55word"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name   string
		cfg    Config
		fields []string // the Fields of the *InvalidErrors, in order; none: valid
	}{
		{"zero value is plaintext", Config{}, nil},
		{"tls with system roots", Config{TLS: true}, nil},
		{"tls with ca and client cert", Config{TLS: true, CAFile: file, CertFile: file, KeyFile: file}, nil},
		{"scram-sha-256", Config{SASLMechanism: "SCRAM-SHA-256", User: user, Password: password}, nil},
		{"mechanism is case-insensitive", Config{SASLMechanism: "scram-sha-512", User: user, Password: password}, nil},
		{"plain over tls", Config{TLS: true, SASLMechanism: "PLAIN", User: user, Password: password}, nil},
		{"unknown mechanism", Config{SASLMechanism: "GSSAPI", User: user, Password: password}, []string{"SASLMechanism"}},
		{"mechanism without credentials", Config{SASLMechanism: "PLAIN"}, []string{"User", "Password"}},
		{"credentials without mechanism", Config{User: user, Password: password}, []string{"User", "Password"}},
		{"ca file without tls", Config{CAFile: file}, []string{"CAFile"}},
		{"missing ca file", Config{TLS: true, CAFile: missing}, []string{"CAFile"}},
		{"ca file is a folder", Config{TLS: true, CAFile: dir}, []string{"CAFile"}},
		{"cert without key", Config{TLS: true, CertFile: file}, []string{"KeyFile"}},
		{"key without cert", Config{TLS: true, KeyFile: file}, []string{"CertFile"}},
		{"insecure without tls", Config{InsecureSkipVerify: true}, []string{"InsecureSkipVerify"}},
		{"oauthbearer with a token", Config{TLS: true, SASLMechanism: "OAUTHBEARER", Token: token}, nil},
		{"oauthbearer is case-insensitive", Config{SASLMechanism: "oauthbearer", Token: "abc.def-_~+/=="}, nil},
		{"oauthbearer without a token", Config{SASLMechanism: "OAUTHBEARER"}, []string{"Token"}},
		{"oauthbearer with user and password", Config{SASLMechanism: "OAUTHBEARER", User: user, Password: password, Token: token},
			[]string{"User", "Password"}},
		{"token with a line break", Config{SASLMechanism: "OAUTHBEARER", Token: token + "\n"}, []string{"Token"}},
		{"token in quotes", Config{SASLMechanism: "OAUTHBEARER", Token: `"` + token + `"`}, []string{"Token"}},
		{"token only padding", Config{SASLMechanism: "OAUTHBEARER", Token: "=="}, []string{"Token"}},
		{"token without mechanism", Config{Token: token}, []string{"Token"}},
		{"token with scram", Config{SASLMechanism: "SCRAM-SHA-256", User: user, Password: password, Token: token}, []string{"Token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.fields == nil {
				require.NoError(t, err)
				_, err := tt.cfg.Opts()
				if tt.cfg.CAFile == "" { // the dummy file is no PEM
					require.NoError(t, err)
				}
				return
			}
			require.Error(t, err)
			var fields []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ie *InvalidError
				require.ErrorAs(t, e, &ie)
				fields = append(fields, ie.Field)
				assert.Contains(t, e.Error(), ie.Field, "the message names the setting")
			}
			assert.Equal(t, tt.fields, fields)
			assert.NotContains(t, err.Error(), password)
			assert.NotContains(t, err.Error(), token)
			_, optsErr := tt.cfg.Opts()
			assert.Equal(t, err.Error(), optsErr.Error(), "Opts validates first")
		})
	}
}

func TestOptsReadsCertificates(t *testing.T) {
	p := newPKI(t)
	_, err := Config{TLS: true, CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}.Opts()
	require.NoError(t, err)

	_, err = Config{TLS: true, CAFile: p.clientKey}.Opts()
	var ie *InvalidError
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, "CAFile", ie.Field)
	assert.Contains(t, err.Error(), "no PEM certificate")

	_, err = Config{TLS: true, CertFile: p.clientCert, KeyFile: p.serverKey}.Opts()
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, "CertFile", ie.Field)

	opts, err := Config{}.Opts()
	require.NoError(t, err)
	assert.Empty(t, opts, "the zero Config changes nothing")
}

// TestNeverPrintsPassword prints a Config every way a program might; the
// token of OAUTHBEARER (set here beside a password, which Validate would
// refuse) is as secret as the password.
func TestNeverPrintsPassword(t *testing.T) {
	c := Config{TLS: true, SASLMechanism: MechanismSCRAMSHA512, User: user, Password: password, Token: token}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("kafka", "security", c)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("kafka", "security", c)
	type wrapper struct{ Kafka Config }
	outs := map[string]string{
		"%v":       fmt.Sprintf("%v", c),
		"%+v":      fmt.Sprintf("%+v", c),
		"%#v":      fmt.Sprintf("%#v", c),
		"%s":       fmt.Sprintf("%s", c), //lint:ignore S1025 the test is about what %s prints
		"%v ptr":   fmt.Sprintf("%v", &c),
		"%+v nest": fmt.Sprintf("%+v", wrapper{c}),
		"slog":     logged.String(),
		"summary":  c.Summary(),
	}
	for verb, out := range outs {
		assert.NotContains(t, out, password, verb)
		assert.NotContains(t, out, token, verb)
	}
	assert.Contains(t, logged.String(), `"oauth_token":"[redacted]"`)
	assert.Contains(t, outs["%v"], `User:"admin"`)
	assert.Contains(t, outs["%v"], redacted, "a set password shows as redacted")
	assert.Contains(t, logged.String(), `"user":"admin"`)
	assert.Contains(t, logged.String(), `"password":"[redacted]"`)
	assert.Contains(t, Config{}.String(), `Password:""`, "an unset password shows as empty")
	assert.Equal(t, "SASL SCRAM-SHA-512 over TLS", c.Summary())
}

// newSASLCluster starts kfake with SASL on and one superuser per mechanism
// given, all with user/password.
func newSASLCluster(t *testing.T, mechanisms []string, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.EnableSASL()}, opts...)
	for _, m := range mechanisms {
		opts = append(opts, kfake.Superuser(m, user, password))
	}
	c, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// roundTrip proves a client built from cfg works: it creates a topic,
// produces a record and consumes it back with a second client.
func roundTrip(t *testing.T, brokers []string, cfg Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, cfg.Check(ctx, brokers))
	opts, err := cfg.Opts()
	require.NoError(t, err)
	opts = append(opts, kgo.SeedBrokers(brokers...), kgo.MetadataMinAge(100*time.Millisecond))

	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	defer cl.Close()
	topic := fmt.Sprintf("auth-%d", topicSeq.Add(1))
	_, err = kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, topic)
	require.NoError(t, err, "create topic")
	rec := &kgo.Record{Topic: topic, Key: []byte("SKU-1"), Value: []byte(`{"hello":"world"}`)}
	require.NoError(t, cl.ProduceSync(ctx, rec).FirstErr(), "produce")

	consumer, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	require.NoError(t, err)
	defer consumer.Close()
	for {
		fs := consumer.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "no record consumed in time")
		require.NoError(t, fs.Err0(), "consume")
		if recs := fs.Records(); len(recs) > 0 {
			assert.Equal(t, "SKU-1", string(recs[0].Key))
			assert.Equal(t, `{"hello":"world"}`, string(recs[0].Value))
			return
		}
	}
}

// checkErr runs Check, which must fail, and returns its error after the
// checks every failure passes: it names the broker, it never holds the
// password.
func checkErr(t *testing.T, brokers []string, cfg Config, extra ...kgo.Opt) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cfg.Check(ctx, brokers, extra...)
	require.Error(t, err)
	t.Logf("Check: %v", err)
	assert.Contains(t, err.Error(), brokers[0])
	assert.NotContains(t, err.Error(), password)
	assert.NotContains(t, err.Error(), wrong)
	return err
}

// TestSASL covers the user/password mechanisms kfake implements; OAUTHBEARER
// is TestOAuthBearer's.
func TestSASL(t *testing.T) {
	for _, mech := range []string{MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512} {
		t.Run(mech, func(t *testing.T) {
			brokers := newSASLCluster(t, []string{mech}).ListenAddrs()
			roundTrip(t, brokers, Config{SASLMechanism: mech, User: user, Password: password})

			// kfake closes the connection on a failed login (a real broker
			// answers SASL_AUTHENTICATION_FAILED first; see
			// TestWrongPasswordBrokerAnswer): the client sees EOF, and
			// Check says what that means.
			err := checkErr(t, brokers, Config{SASLMechanism: mech, User: user, Password: wrong})
			assert.ErrorIs(t, err, io.EOF)
			assert.Contains(t, err.Error(), "closed the connection while authenticating: wrong user, password or SASL mechanism")
			assert.Contains(t, err.Error(), "SASL "+mech)
			assert.Contains(t, err.Error(), `user "admin"`)

			// A client without Check fails too: its first request errors.
			opts, err := Config{SASLMechanism: mech, User: user, Password: wrong}.Opts()
			require.NoError(t, err)
			cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(brokers...), kgo.RequestRetries(0))...)
			require.NoError(t, err)
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = kadm.NewClient(cl).ListTopics(ctx)
			require.Error(t, err, "a wrong password must not reach the topics")
			assert.NotContains(t, err.Error(), wrong)

			// No SASL at all against a SASL listener fails as well.
			err = checkErr(t, brokers, Config{})
			assert.Contains(t, err.Error(), "plaintext")
		})
	}
}

// TestWrongPasswordBrokerAnswer makes kfake answer a failed PLAIN login the
// way Kafka does (SASL_AUTHENTICATION_FAILED with a message, then close):
// the error of Check is then errors.Is kerr.SaslAuthenticationFailed.
func TestWrongPasswordBrokerAnswer(t *testing.T) {
	c := newSASLCluster(t, []string{MechanismPlain})
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.SASLAuthenticateRequest)
		parts := bytes.Split(r.SASLAuthBytes, []byte{0})
		if len(parts) == 3 && string(parts[2]) == password {
			return nil, nil, false // kfake logs the user in
		}
		resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	brokers := c.ListenAddrs()
	roundTrip(t, brokers, Config{SASLMechanism: MechanismPlain, User: user, Password: password})

	err := checkErr(t, brokers, Config{SASLMechanism: MechanismPlain, User: user, Password: wrong})
	assert.ErrorIs(t, err, kerr.SaslAuthenticationFailed)
	var ke *kerr.Error
	assert.ErrorAs(t, err, &ke)
	assert.Contains(t, err.Error(), "authentication failed: check the user, the password and the SASL mechanism")
	assert.Contains(t, err.Error(), "Invalid username or password")
}

func TestTLS(t *testing.T) {
	p := newPKI(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(p.serverTLS(t, false)))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	require.True(t, strings.HasPrefix(brokers[0], "127.0.0.1:"), "the server certificate names 127.0.0.1")

	roundTrip(t, brokers, Config{TLS: true, CAFile: p.caFile})
	roundTrip(t, brokers, Config{TLS: true, InsecureSkipVerify: true})

	err = checkErr(t, brokers, Config{TLS: true}) // system roots do not know the test CA
	var verify *tls.CertificateVerificationError
	assert.ErrorAs(t, err, &verify)
	assert.Contains(t, err.Error(), "unknown authority: set the CA file")

	err = checkErr(t, brokers, Config{}) // plaintext against a TLS listener
	assert.Contains(t, err.Error(), "plaintext")
}

// TestTLSToPlaintextListener: kfake, like Kafka, never answers a TLS
// handshake on a plaintext listener; the dial times out and Check says why.
func TestTLSToPlaintextListener(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	err = checkErr(t, c.ListenAddrs(), Config{TLS: true, InsecureSkipVerify: true}, kgo.DialTimeout(time.Second))
	assert.Contains(t, err.Error(), "does its listener speak TLS")
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(p.serverTLS(t, true)))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()

	roundTrip(t, brokers, Config{TLS: true, CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey})
	err = checkErr(t, brokers, Config{TLS: true, CAFile: p.caFile}) // no client certificate
	assert.Contains(t, err.Error(), "it may require a client certificate")
}

// TestSASLOverTLS is the production shape: SCRAM-SHA-512 over TLS.
func TestSASLOverTLS(t *testing.T) {
	p := newPKI(t)
	c := newSASLCluster(t, []string{MechanismSCRAMSHA512}, kfake.TLS(p.serverTLS(t, false)))
	brokers := c.ListenAddrs()
	cfg := Config{TLS: true, CAFile: p.caFile, SASLMechanism: MechanismSCRAMSHA512, User: user, Password: password}
	roundTrip(t, brokers, cfg)

	cfg.Password = wrong
	err := checkErr(t, brokers, cfg)
	assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF), "%v", err)
	assert.Contains(t, err.Error(), "SASL SCRAM-SHA-512 over TLS")
}
