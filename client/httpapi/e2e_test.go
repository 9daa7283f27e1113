package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/client/httpapi"
	"github.com/reservations/reservations/client/internal/pipelinetest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

func post(t *testing.T, url, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

// The HTTP API in front of the real client and both processors on kfake.
func TestHTTPAPIEndToEnd(t *testing.T) {
	pl := pipelinetest.ForTest(t, 3, processor.RoleSKU, processor.RoleCart)
	srv := httptest.NewServer(httpapi.New(pl.TestClient(t), httpapi.Config{Timeout: 20 * time.Second}))
	defer srv.Close()

	code, _, body := post(t, srv.URL+"/v1/stock/SKU-1", `{"on_hand":5}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	code, _, body = post(t, srv.URL+"/v1/stock/SKU-2", `{"on_hand":1}`)
	require.Equal(t, http.StatusOK, code, "%s", body)

	// One line; the same Idempotency-Key again: the original decision.
	code, hdr, body := post(t, srv.URL+"/v1/reservations", `{"sku":"SKU-1","reservation_id":"r-1","quantity":2,"cart_id":"c-1"}`,
		"Idempotency-Key", "idem-1")
	require.Equal(t, http.StatusOK, code, "%s", body)
	assert.Equal(t, "idem-1", hdr.Get("Idempotency-Key"))
	var res schemas.Result
	require.NoError(t, json.Unmarshal(body, &res))
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	assert.False(t, res.Duplicate)
	code, _, body = post(t, srv.URL+"/v1/reservations", `{"sku":"SKU-1","reservation_id":"r-1","quantity":2,"cart_id":"c-1"}`,
		"Idempotency-Key", "idem-1")
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.NoError(t, json.Unmarshal(body, &res))
	assert.True(t, res.Duplicate)
	assert.Equal(t, int64(3), res.Stock.Available, "decided once")

	// Rejected: 409 with the result.
	code, _, body = post(t, srv.URL+"/v1/reservations", `{"sku":"SKU-1","reservation_id":"r-2","quantity":4}`)
	require.Equal(t, http.StatusConflict, code, "%s", body)
	require.NoError(t, json.Unmarshal(body, &res))
	assert.Equal(t, schemas.ReasonInsufficientStock, res.Reason)

	// Extend, commit, then a release of the consumed reservation: 409.
	code, _, body = post(t, srv.URL+"/v1/reservations/SKU-1/r-1/extend", `{"ttl_seconds":60}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	code, _, body = post(t, srv.URL+"/v1/reservations/SKU-1/r-1/commit", `{"order_id":"o-1"}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	code, _, body = post(t, srv.URL+"/v1/reservations/SKU-1/r-1/release", ``)
	require.Equal(t, http.StatusConflict, code, "%s", body)
	require.NoError(t, json.Unmarshal(body, &res))
	assert.Equal(t, schemas.ReasonReservationNotActive, res.Reason)

	// A batch: all or nothing through the cart coordinator.
	var cr schemas.CartResult
	code, _, body = post(t, srv.URL+"/v1/reservations", `{"cart_id":"cart-7","items":[{"sku":"SKU-1","quantity":1},{"sku":"SKU-2","quantity":2}]}`)
	require.Equal(t, http.StatusConflict, code, "%s", body)
	require.NoError(t, json.Unmarshal(body, &cr))
	assert.Equal(t, schemas.ReasonInsufficientStock, cr.Reason)
	code, _, body = post(t, srv.URL+"/v1/reservations", `{"cart_id":"cart-7","items":[{"sku":"SKU-1","quantity":1},{"sku":"SKU-2","quantity":1}]}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.NoError(t, json.Unmarshal(body, &cr))
	require.Len(t, cr.Lines, 2)
	code, _, body = post(t, srv.URL+"/v1/carts/cart-7/commit", `{"order_id":"o-7"}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	code, _, body = post(t, srv.URL+"/v1/carts/cart-7/release", ``)
	require.Equal(t, http.StatusOK, code, "%s", body)

	// Invalid before sending: 422 naming the field.
	code, _, body = post(t, srv.URL+"/v1/stock/SKU-1", `{"delta":0}`)
	require.Equal(t, http.StatusUnprocessableEntity, code, "%s", body)
	assert.Contains(t, string(body), `"field":"delta"`)
}

// No processor: 504 naming the command id; once a processor runs, the same
// key is answered with the decision.
func TestHTTPAPITimeout(t *testing.T) {
	pl := pipelinetest.ForTest(t, 1)
	srv := httptest.NewServer(httpapi.New(pl.TestClient(t), httpapi.Config{Timeout: time.Second}))
	defer srv.Close()
	code, hdr, body := post(t, srv.URL+"/v1/stock/S", `{"on_hand":3}`)
	require.Equal(t, http.StatusGatewayTimeout, code, "%s", body)
	var eb httpapi.ErrorBody
	require.NoError(t, json.Unmarshal(body, &eb))
	require.NotEmpty(t, eb.CommandID)
	assert.Equal(t, eb.CommandID, hdr.Get("Idempotency-Key"))

	require.NoError(t, pl.Start(processor.RoleSKU))
	require.Eventually(t, func() bool {
		code, _, body = post(t, srv.URL+"/v1/stock/S", `{"on_hand":3}`, "Idempotency-Key", eb.CommandID)
		return code == http.StatusOK
	}, 60*time.Second, 10*time.Millisecond)
	var res schemas.Result
	require.NoError(t, json.Unmarshal(body, &res))
	assert.Equal(t, eb.CommandID, res.CommandID)
}
