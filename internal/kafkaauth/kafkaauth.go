// Package kafkaauth turns the Kafka security settings of the pipeline (TLS,
// mutual TLS, SASL PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER) into franz-go
// client options, built with franz-go's own packages: kgo.DialTLSConfig,
// sasl/plain, sasl/scram and sasl/oauth.
//
// OAUTHBEARER takes a static bearer token (Token): it is sent as is at every
// authentication, including the re-authentications a broker with
// connections.max.reauth.ms asks for, so the process must be restarted with a
// new token before the broker stops accepting the old one. Fetching tokens
// from an identity provider is not built in.
//
// Invariants:
//   - The password and the token are never printed: String, GoString and
//     LogValue redact them, and no error of this package contains them (errors
//     name the setting, and a value only when it is not secret).
//   - Opts validates first: a Config that fails Validate builds no options.
//   - The zero Config is valid and means plaintext without SASL (Opts returns
//     no options), so a deployment that does not need security sets nothing.
package kafkaauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASL mechanisms, spelled as Kafka's sasl.mechanism.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
	MechanismOAuthBearer = "OAUTHBEARER"
)

// Mechanisms lists the supported SASL mechanisms.
var Mechanisms = []string{MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512, MechanismOAuthBearer}

// redacted replaces a set password wherever a Config is printed.
const redacted = "[redacted]"

// Config is how the Kafka clients of the pipeline connect and authenticate.
// The zero value is plaintext without authentication.
type Config struct {
	// TLS dials the brokers with TLS (Kafka: security.protocol SSL or
	// SASL_SSL). Default false. The server name checked is the broker's host.
	TLS bool
	// CAFile is a PEM file of the certificate authorities that sign the
	// brokers' certificates. Default "": the system roots. Requires TLS.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and its key for
	// mutual TLS. Both or neither. Default "": no client certificate.
	// Require TLS.
	CertFile, KeyFile string
	// InsecureSkipVerify accepts any broker certificate: for tests only, it
	// allows a man in the middle. Default false. Requires TLS.
	InsecureSkipVerify bool

	// SASLMechanism is "" (no SASL, the default), PLAIN, SCRAM-SHA-256,
	// SCRAM-SHA-512 or OAUTHBEARER (case-insensitive). PLAIN sends the
	// password as is, OAUTHBEARER the token: use them with TLS only.
	SASLMechanism string
	// User and Password are the SASL credentials of PLAIN and SCRAM; both are
	// required with those mechanisms and must be empty with OAUTHBEARER or
	// without SASL. Password is never printed (nor encoded as JSON).
	User     string
	Password string `json:"-"`
	// Token is the bearer token of OAUTHBEARER (RFC 6750 syntax, e.g. a JWT):
	// required with that mechanism, empty otherwise. It is static (see the
	// package comment) and never printed (nor encoded as JSON).
	Token string `json:"-"`
}

// InvalidError reports a setting of a Config that cannot work. Callers map
// Field to their own name for it (a flag, an environment variable).
type InvalidError struct {
	// Field is the Config field at fault: "SASLMechanism", "CAFile", ...
	Field string
	// Reason says what is wrong; it never contains the password.
	Reason string
}

func (e *InvalidError) Error() string { return "kafka security: " + e.Field + ": " + e.Reason }

// Validate reports every setting that cannot work, as *InvalidError values
// joined with errors.Join (nil if c is usable). It checks that the files
// named exist and are regular files, so that a typo fails at start.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	mech, known := c.mechanism()
	if !known {
		bad("SASLMechanism", "%q: want one of %s (or empty for no SASL)", c.SASLMechanism, strings.Join(Mechanisms, ", "))
	}
	switch {
	case mech == MechanismOAuthBearer:
		if c.User != "" {
			bad("User", "not used with SASL mechanism %s (the token names the principal)", mech)
		}
		if c.Password != "" {
			bad("Password", "not used with SASL mechanism %s (the token names the principal)", mech)
		}
		switch {
		case c.Token == "":
			bad("Token", "required with SASL mechanism %s", mech)
		case !isBearerToken(c.Token):
			bad("Token", "not a bearer token: want letters, digits and -._~+/ with trailing = (RFC 6750), "+
				"e.g. a JWT; check for quotes, spaces or line breaks around it")
		}
	case mech != "" && known:
		if c.User == "" {
			bad("User", "required with SASL mechanism %s", mech)
		}
		if c.Password == "" {
			bad("Password", "required with SASL mechanism %s", mech)
		}
		if c.Token != "" {
			bad("Token", "set, but the SASL mechanism is %s, not %s", mech, MechanismOAuthBearer)
		}
	case mech == "":
		if c.User != "" {
			bad("User", "set, but no SASL mechanism is (set SASLMechanism)")
		}
		if c.Password != "" {
			bad("Password", "set, but no SASL mechanism is (set SASLMechanism)")
		}
		if c.Token != "" {
			bad("Token", "set, but no SASL mechanism is (set SASLMechanism)")
		}
	}
	files := []struct{ field, path string }{{"CAFile", c.CAFile}, {"CertFile", c.CertFile}, {"KeyFile", c.KeyFile}}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if !c.TLS {
			bad(f.field, "%s set, but TLS is off (set TLS)", f.path)
			continue
		}
		st, err := os.Stat(f.path)
		switch {
		case err != nil:
			bad(f.field, "%v", err)
		case !st.Mode().IsRegular():
			bad(f.field, "%s is not a regular file", f.path)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		if c.CertFile == "" {
			bad("CertFile", "required with KeyFile (mutual TLS needs both)")
		} else {
			bad("KeyFile", "required with CertFile (mutual TLS needs both)")
		}
	}
	if c.InsecureSkipVerify && !c.TLS {
		bad("InsecureSkipVerify", "set, but TLS is off (set TLS)")
	}
	return errors.Join(errs...)
}

// isBearerToken reports whether t has the syntax of an RFC 6750 b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isBearerToken(t string) bool {
	body := strings.TrimRight(t, "=")
	if body == "" {
		return false
	}
	for _, r := range body {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-._~+/", r):
		default:
			return false
		}
	}
	return true
}

// mechanism returns the canonical spelling of c.SASLMechanism and whether it
// is supported ("" is: no SASL).
func (c Config) mechanism() (string, bool) {
	m := strings.ToUpper(strings.TrimSpace(c.SASLMechanism))
	if m == "" {
		return "", true
	}
	for _, known := range Mechanisms {
		if m == known {
			return m, true
		}
	}
	return m, false
}

// Opts returns the kgo options that make a client connect as c says: none
// for the zero Config, kgo.DialTLSConfig for TLS, kgo.SASL for a mechanism.
// It validates c first and reads the certificate files.
func (c Config) Opts() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []kgo.Opt
	if c.TLS {
		tc, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := c.saslMechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// tlsConfig builds the client TLS config; kgo.DialTLSConfig clones it per
// dial and sets ServerName to the broker's host.
func (c Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: c.InsecureSkipVerify, // opt-in, documented as test-only
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, &InvalidError{Field: "CAFile", Reason: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &InvalidError{Field: "CAFile", Reason: c.CAFile + " holds no PEM certificate"}
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, &InvalidError{Field: "CertFile", Reason: fmt.Sprintf("load key pair %s, %s: %v", c.CertFile, c.KeyFile, err)}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// saslMechanism returns franz-go's mechanism for c, nil without SASL.
// c must be valid.
func (c Config) saslMechanism() sasl.Mechanism {
	mech, _ := c.mechanism()
	switch mech {
	case MechanismPlain:
		return plain.Auth{User: c.User, Pass: c.Password}.AsMechanism()
	case MechanismSCRAMSHA256:
		return scram.Auth{User: c.User, Pass: c.Password}.AsSha256Mechanism()
	case MechanismSCRAMSHA512:
		return scram.Auth{User: c.User, Pass: c.Password}.AsSha512Mechanism()
	case MechanismOAuthBearer:
		return oauth.Auth{Token: c.Token}.AsMechanism()
	}
	return nil
}

// Check connects to brokers as c says and asks one of them for its API
// versions (kgo.Client.Ping), so that a wrong password, mechanism or
// certificate fails at start with a message that says so, instead of as an
// EOF in the first real request. extra options come after c's (a dialer, a
// logger). The error wraps the client's (errors.Is(err,
// kerr.SaslAuthenticationFailed) holds for a broker that answers a failed
// login with that code) and never contains the password or the token.
func (c Config) Check(ctx context.Context, brokers []string, extra ...kgo.Opt) error {
	opts, err := c.Opts()
	if err != nil {
		return err
	}
	who := c.Summary()
	if c.User != "" {
		who += fmt.Sprintf(", user %q", c.User)
	}
	cl, err := kgo.NewClient(append(append(opts, kgo.SeedBrokers(brokers...)), extra...)...)
	if err != nil {
		return fmt.Errorf("kafka client for %s (%s): %w", strings.Join(brokers, ","), who, err)
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("connect to kafka %s (%s): %s: %w", strings.Join(brokers, ","), who, c.hint(err), err)
	}
	return nil
}

// hint explains a connection error in terms of the settings.
func (c Config) hint(err error) string {
	mech, _ := c.mechanism()
	var verify *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var recordHeader tls.RecordHeaderError
	var op *net.OpError
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed) && mech == MechanismOAuthBearer:
		return "authentication failed: check the token (expired? issued for this cluster?) and the SASL mechanism"
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return "authentication failed: check the user, the password and the SASL mechanism"
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Sprintf("the broker does not offer SASL mechanism %s", mech)
	case errors.Is(err, kerr.IllegalSaslState):
		return "the broker expects another SASL exchange: check the SASL mechanism"
	case errors.As(err, &unknownCA):
		return "the broker's certificate is signed by an unknown authority: set the CA file to the CA that signs it"
	case errors.As(err, &hostname):
		return "the broker's certificate does not name the host dialed: use the host name in the certificate"
	case errors.As(err, &verify):
		return "the broker's certificate is not trusted"
	case errors.As(err, &recordHeader):
		return "TLS is on, but the broker's listener does not speak TLS"
	case errors.As(err, &op) && op.Op == "remote error": // a TLS alert from the broker
		if c.CertFile == "" {
			return "the broker refused the TLS handshake: it may require a client certificate (set the cert and key files)"
		}
		return "the broker refused the TLS handshake: it may not trust the client certificate"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		switch {
		case mech == MechanismOAuthBearer:
			return "the broker closed the connection while authenticating: a rejected or expired token, " +
				"a broker without OAUTHBEARER, or a listener that wants TLS"
		case mech != "" && c.TLS:
			return "the broker closed the connection while authenticating: wrong user, password or SASL mechanism"
		case mech != "":
			return "the broker closed the connection while authenticating: wrong user, password or SASL mechanism, " +
				"or a listener that wants TLS"
		case !c.TLS:
			return "the broker closed the connection: its listener may want TLS or SASL"
		}
		return "the broker closed the connection: its listener may want SASL or a client certificate"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		if c.TLS {
			return "no broker answered in time: is the address right, and does its listener speak TLS " +
				"(a plaintext listener never completes the TLS handshake)?"
		}
		return "no broker answered in time: is the address right?"
	}
	return "connection failed"
}

// Summary names the security in use in a few words, for a startup log line:
// "plaintext", "TLS", "mutual TLS", "SASL SCRAM-SHA-512 over TLS", ...
func (c Config) Summary() string {
	transport := "plaintext"
	switch {
	case c.TLS && c.CertFile != "":
		transport = "mutual TLS"
	case c.TLS:
		transport = "TLS"
	}
	if c.InsecureSkipVerify {
		transport += " (certificate not verified)"
	}
	mech, _ := c.mechanism()
	if mech == "" {
		return transport
	}
	return "SASL " + mech + " over " + transport
}

// password is how a password appears when c is printed.
func (c Config) password() string { return redact(c.Password) }

// redact is how a secret appears when c is printed: empty, or redacted.
func redact(secret string) string {
	if secret == "" {
		return ""
	}
	return redacted
}

// String prints every setting, the password and the token redacted.
func (c Config) String() string {
	return fmt.Sprintf("{TLS:%t CAFile:%q CertFile:%q KeyFile:%q InsecureSkipVerify:%t SASLMechanism:%q User:%q Password:%q Token:%q}",
		c.TLS, c.CAFile, c.CertFile, c.KeyFile, c.InsecureSkipVerify, c.SASLMechanism, c.User, c.password(), redact(c.Token))
}

// GoString is String for %#v, so that no verb prints the password or the token.
func (c Config) GoString() string { return "kafkaauth.Config" + c.String() }

// LogValue logs every setting as a group, the password and the token redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Bool("tls", c.TLS),
		slog.String("ca_file", c.CAFile),
		slog.String("cert_file", c.CertFile),
		slog.String("key_file", c.KeyFile),
		slog.Bool("insecure_skip_verify", c.InsecureSkipVerify),
		slog.String("sasl_mechanism", c.SASLMechanism),
		slog.String("user", c.User),
		slog.String("password", c.password()),
		slog.String("oauth_token", redact(c.Token)),
	)
}
