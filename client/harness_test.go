package client_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/client/internal/pipelinetest"
	"github.com/reservations/reservations/processor"
)

func newTestPipeline(t *testing.T, parts int32, roles ...processor.Role) *pipelinetest.Pipeline {
	t.Helper()
	return pipelinetest.ForTest(t, parts, roles...)
}

func newTestClient(t *testing.T, pl *pipelinetest.Pipeline, opts ...client.Option) *client.Client {
	t.Helper()
	return pl.TestClient(t, opts...)
}

func examplePipeline() (brokers []string, prefix string, stop func()) { return pipelinetest.Example() }

// setStocks sets the stock of the SKUs <prefix>-0 .. <prefix>-(n-1) to onHand
// through c.
func setStocks(ctx context.Context, t *testing.T, c *client.Client, prefix string, n int, onHand int64) {
	t.Helper()
	for i := range n {
		_, err := c.SetStock(ctx, client.SetStockRequest{SKU: fmt.Sprintf("%s-%d", prefix, i), OnHand: onHand})
		require.NoError(t, err)
	}
}
