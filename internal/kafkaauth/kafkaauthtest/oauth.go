// Package kafkaauthtest gives tests a Kafka broker that accepts SASL
// OAUTHBEARER, which kfake does not implement.
package kafkaauthtest

import (
	"bytes"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// OAuthCluster is an in-process kfake broker that accepts SASL OAUTHBEARER
// (RFC 7628) with one valid bearer token, and PLAIN with User/Password.
//
// kfake knows PLAIN and SCRAM only, so two control functions play the
// broker's side of OAUTHBEARER: the handshake for OAUTHBEARER is taken as one
// for PLAIN, and the client's initial response "n,,\x01auth=Bearer
// <token>\x01\x01" is checked here, then swapped for the PLAIN login of the
// superuser, so that kfake marks the connection authenticated. A wrong token
// is answered as Kafka answers it: SASL_AUTHENTICATION_FAILED.
type OAuthCluster struct {
	*kfake.Cluster
	Brokers []string

	mu      sync.Mutex
	pending int      // OAUTHBEARER handshakes not yet authenticated
	tokens  []string // tokens received, in order
}

// User and Password are the PLAIN superuser of an OAuthCluster.
const (
	User     = "admin"
	Password = "plain-Pa55word"
)

// NewOAuthCluster starts the broker; it is closed when t ends.
func NewOAuthCluster(t testing.TB, validToken string) *OAuthCluster {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("PLAIN", User, Password))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(kc.Close)
	c := &OAuthCluster{Cluster: kc, Brokers: kc.ListenAddrs()}
	kc.ControlKey(int16(kmsg.SASLHandshake), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		r := req.(*kmsg.SASLHandshakeRequest)
		if r.Mechanism == "OAUTHBEARER" {
			c.mu.Lock()
			c.pending++
			c.mu.Unlock()
			r.Mechanism = "PLAIN" // kfake goes on as for PLAIN
		}
		return nil, nil, false
	})
	kc.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		r := req.(*kmsg.SASLAuthenticateRequest)
		const prefix, suffix = "n,,\x01auth=Bearer ", "\x01\x01"
		if !bytes.HasPrefix(r.SASLAuthBytes, []byte(prefix)) || !bytes.HasSuffix(r.SASLAuthBytes, []byte(suffix)) {
			return nil, nil, false // not OAUTHBEARER: kfake handles it
		}
		got := string(r.SASLAuthBytes[len(prefix) : len(r.SASLAuthBytes)-len(suffix)])
		c.mu.Lock()
		c.tokens = append(c.tokens, got)
		oauth := c.pending > 0
		if oauth {
			c.pending--
		}
		c.mu.Unlock()
		if !oauth {
			return nil, nil, false
		}
		if got != validToken {
			resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
			resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
			msg := "Authentication failed: invalid_token"
			resp.ErrorMessage = &msg
			return resp, nil, true
		}
		r.SASLAuthBytes = []byte("\x00" + User + "\x00" + Password)
		return nil, nil, false
	})
	return c
}

// Tokens returns the bearer tokens the broker received, in order.
func (c *OAuthCluster) Tokens() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.tokens...)
}
