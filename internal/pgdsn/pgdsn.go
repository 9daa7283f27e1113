// Package pgdsn hides the password of a PostgreSQL connection string, for
// logs and messages: the one redaction the commands, the sink tools and the
// test servers share.
package pgdsn

import (
	"net/url"
	"regexp"
	"strings"
)

// kvPassword matches a password in a keyword/value DSN, quoted or not.
var kvPassword = regexp.MustCompile(`\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// Redact hides the password of a DSN: a URL's (url.URL.Redacted) and its
// password parameter, or the password of the keyword/value form.
func Redact(dsn string) string {
	if !strings.Contains(dsn, "://") {
		return kvPassword.ReplaceAllString(dsn, "password=xxxxx")
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
