package kafkaauth

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/reservations/reservations/internal/kafkaauth/kafkaauthtest"
)

// token is a bearer token of the tests (a JWT's shape: three base64url parts).
const token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXNlcnZhdGlvbnMifQ.c2lnbmF0dXJl"

// TestOAuthBearer: a client built from an OAUTHBEARER Config authenticates
// with its token (the RFC 7628 initial response carries it), produces and
// consumes; a wrong token fails Check with a message about the token and
// never shows it.
func TestOAuthBearer(t *testing.T) {
	c := kafkaauthtest.NewOAuthCluster(t, token)
	cfg := Config{SASLMechanism: "oauthbearer", Token: token}
	roundTrip(t, c.Brokers, cfg)
	require.NotEmpty(t, c.Tokens())
	for _, s := range c.Tokens() {
		assert.Equal(t, token, s, "the token goes to the broker as is")
	}
	assert.Equal(t, "SASL OAUTHBEARER over plaintext", cfg.Summary())

	const expired = "eyJhbGciOiJSUzI1NiJ9.ZXhwaXJlZA.c2ln"
	err := checkErr(t, c.Brokers, Config{SASLMechanism: MechanismOAuthBearer, Token: expired})
	assert.ErrorIs(t, err, kerr.SaslAuthenticationFailed)
	assert.Contains(t, err.Error(), "authentication failed: check the token")
	assert.Contains(t, err.Error(), "SASL OAUTHBEARER over plaintext")
	assert.NotContains(t, err.Error(), expired)
	assert.NotContains(t, err.Error(), token)

	// PLAIN still works on the same broker.
	roundTrip(t, c.Brokers, Config{SASLMechanism: MechanismPlain, User: kafkaauthtest.User, Password: kafkaauthtest.Password})
}

// TestOAuthBearerUnsupportedByBroker: a broker without OAUTHBEARER (kfake
// itself) refuses the mechanism, and Check says so.
func TestOAuthBearerUnsupportedByBroker(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(MechanismPlain, user, password))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	err = checkErr(t, c.ListenAddrs(), Config{SASLMechanism: MechanismOAuthBearer, Token: token})
	assert.ErrorIs(t, err, kerr.UnsupportedSaslMechanism)
	assert.Contains(t, err.Error(), "the broker does not offer SASL mechanism OAUTHBEARER")
	assert.NotContains(t, err.Error(), token)
}
