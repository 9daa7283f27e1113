package pgdsn

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:secret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:pw@h:5432/db?sslmode=disable", "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{"postgres://u@h/db?password=pw", "postgres://u@h/db?password=xxxxx"},
		{"postgres://h/db", "postgres://h/db"},
		{"host=h password=secret user=u", "host=h password=xxxxx user=u"},
		{"host=h password=pw dbname=d", "host=h password=xxxxx dbname=d"},
		{"host=h password='a b\\' c' user=u", "host=h password=xxxxx user=u"},
		{"host=h password = secret", "host=h password=xxxxx"},
		{"host=/var/run/postgresql user=postgres", "host=/var/run/postgresql user=postgres"},
		{"postgres://u:p@h/%zz", "(unparsable DSN)"},
	} {
		assert.Equal(t, tc.want, Redact(tc.in), tc.in)
	}
}
