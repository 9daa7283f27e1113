package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A short run of the HTTP load measurement: every request answered 200, the
// percentiles ordered, the table printed.
func TestHTTPLoadSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := RunHTTPLoad(ctx, HTTPLoadConfig{Concurrency: []int{4, 32}, Duration: time.Second, SKUs: 20, Partitions: 4}, &out)
	require.NoError(t, err, out.String())
	require.Len(t, rep.Steps, 2)
	for _, s := range rep.Steps {
		assert.Positive(t, s.Requests)
		assert.Zero(t, s.Errors)
		assert.LessOrEqual(t, s.P50, s.P95)
		assert.LessOrEqual(t, s.P95, s.P99)
		assert.GreaterOrEqual(t, s.ReadAmplification, 1.0, "a client reads at least the results it needs")
	}
	assert.Contains(t, out.String(), "| callers | requests |")
	t.Log(out.String())
}
