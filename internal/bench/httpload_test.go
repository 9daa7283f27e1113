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

// The HTTP layer alone (httpload -http-only): the same callers and handler,
// every call answered without a broker or a processor, and the report says so.
func TestHTTPLoadHTTPOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := RunHTTPLoad(ctx, HTTPLoadConfig{Concurrency: []int{8}, Duration: 500 * time.Millisecond, SKUs: 20, HTTPOnly: true}, &out)
	require.NoError(t, err, out.String())
	require.Len(t, rep.Steps, 1)
	assert.True(t, rep.HTTPOnly)
	assert.Positive(t, rep.Steps[0].Requests)
	assert.Zero(t, rep.Steps[0].Errors)
	assert.Zero(t, rep.Steps[0].ReadAmplification, "no client reads anything")
	assert.Contains(t, out.String(), "The HTTP layer alone")
}
