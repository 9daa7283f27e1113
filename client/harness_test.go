package client_test

import (
	"testing"

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
