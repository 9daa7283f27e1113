package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkaauth"
)

// kafkaSecurity are the Kafka TLS and SASL settings of every subcommand that
// talks to a Kafka cluster (serve, sink, verify, replay, send; not dev, whose
// embedded broker is plaintext on loopback). They map onto kafkaauth.Config,
// whose options go to every Kafka client the subcommand creates.
type kafkaSecurity struct {
	Config kafkaauth.Config
	// opts are Config's client options, built by validate.
	opts []kgo.Opt
}

// kafkaSecurityFlag names the setting of each kafkaauth.Config field.
var kafkaSecurityFlag = map[string]string{
	"TLS":                "kafka-tls",
	"CAFile":             "kafka-ca-file",
	"CertFile":           "kafka-cert-file",
	"KeyFile":            "kafka-key-file",
	"InsecureSkipVerify": "kafka-tls-insecure-skip-verify",
	"SASLMechanism":      "kafka-sasl-mechanism",
	"User":               "kafka-user",
	"Password":           "kafka-password",
	"Token":              "kafka-oauth-token",
}

func (k *kafkaSecurity) register(s *settings) {
	c := &k.Config
	s.Bool(&c.TLS, "kafka-tls", false,
		"connect to the brokers with TLS (Kafka security.protocol SSL, or SASL_SSL with --kafka-sasl-mechanism)")
	s.String(&c.CAFile, "kafka-ca-file", "",
		"PEM file of the certificate authorities that sign the brokers' certificates (needs --kafka-tls; empty: the system roots)")
	s.ShowDefault("kafka-ca-file", "the system roots")
	s.String(&c.CertFile, "kafka-cert-file", "",
		"PEM client certificate for mutual TLS (needs --kafka-tls and --kafka-key-file)")
	s.String(&c.KeyFile, "kafka-key-file", "", "PEM private key of --kafka-cert-file")
	s.Bool(&c.InsecureSkipVerify, "kafka-tls-insecure-skip-verify", false,
		"accept any broker certificate (needs --kafka-tls): for tests only, it allows a man in the middle")
	s.String(&c.SASLMechanism, "kafka-sasl-mechanism", "",
		"SASL mechanism: "+strings.Join(kafkaauth.Mechanisms, ", ")+
			" (empty: no SASL; PLAIN sends the password and OAUTHBEARER the token in clear: use them with --kafka-tls)")
	s.String(&c.User, "kafka-user", "", "SASL user (required with PLAIN and SCRAM)")
	s.String(&c.Password, "kafka-password", "",
		"SASL password (required with PLAIN and SCRAM); never printed. Prefer the environment variable "+
			envName("kafka-password")+" (or "+envName("kafka-password")+fileSuffix+
			") to the flag, which other users of the machine can read in the process list")
	s.Secret("kafka-password")
	s.String(&c.Token, "kafka-oauth-token", "",
		"bearer token of SASL OAUTHBEARER (required with it), e.g. a JWT; read once at start, so restart before it expires; "+
			"never printed. Prefer "+envName("kafka-oauth-token")+fileSuffix+" or "+envName("kafka-oauth-token")+" to the flag")
	s.Secret("kafka-oauth-token")
}

// validate checks the settings and builds the client options, reporting each
// setting at fault by its flag (exit 2). It reads the certificate files.
func (k *kafkaSecurity) validate(s *settings) error {
	opts, err := k.Config.Opts()
	if err == nil {
		k.opts = opts
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	out := make([]error, 0, len(errs))
	for _, e := range errs {
		var ie *kafkaauth.InvalidError
		name, ok := "", false
		if errors.As(e, &ie) {
			name, ok = kafkaSecurityFlag[ie.Field]
		}
		if !ok {
			out = append(out, e)
			continue
		}
		out = append(out, s.Invalid(name, "%s", flagReason.Replace(ie.Reason)))
	}
	return errors.Join(out...)
}

// flagReason rewrites the kafkaauth.Config field names that the reasons of
// kafkaauth.InvalidError refer to into the flags that set them, for display.
var flagReason = strings.NewReplacer(
	"(set SASLMechanism)", "(set --kafka-sasl-mechanism)",
	"(set TLS)", "(set --kafka-tls)",
	"required with KeyFile", "required with --kafka-key-file",
	"required with CertFile", "required with --kafka-cert-file",
)

// Opts returns the client options of the settings (validate builds them).
func (k *kafkaSecurity) Opts() []kgo.Opt { return k.opts }

// log logs how the subcommand connects to brokers, the password and the
// token redacted, and warns when one of them came as a flag.
func (k *kafkaSecurity) log(log *slog.Logger, s *settings, brokers []string) {
	log.Info("kafka connection", "brokers", brokers, "security", k.Config.Summary(), "kafka", k.Config)
	if k.Config.Password != "" && s.Source("kafka-password") == fromFlag {
		log.Warn("the Kafka password was given as a flag, which other users of this machine can read in the process list: " +
			"set " + envName("kafka-password") + " or " + envName("kafka-password") + fileSuffix + " instead")
	}
	if k.Config.Token != "" && s.Source("kafka-oauth-token") == fromFlag {
		log.Warn("the Kafka OAuth token was given as a flag, which other users of this machine can read in the process list: " +
			"set " + envName("kafka-oauth-token") + fileSuffix + " or " + envName("kafka-oauth-token") + " instead")
	}
}

// check connects to brokers with the settings and fails with a message that
// names the cause (wrong password, untrusted certificate, no TLS listener,
// ...) so that the subcommand stops at once instead of retrying. The error
// never holds the password.
func (k *kafkaSecurity) check(ctx context.Context, brokers []string) error {
	ctx, cancel := context.WithTimeout(ctx, kafkaCheckTimeout)
	defer cancel()
	if err := k.Config.Check(ctx, brokers); err != nil {
		return fmt.Errorf("kafka connection check (settings --brokers, --kafka-*): %w", err)
	}
	return nil
}

// kafkaCheckTimeout bounds the connection check at startup.
const kafkaCheckTimeout = 30 * time.Second
