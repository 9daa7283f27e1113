package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/client/httpapi"
	"github.com/reservations/reservations/schemas"
)

// fake is a Caller that validates as the client does and answers with
// outcome (or err), recording what it was asked.
type fake struct {
	mu      sync.Mutex
	cmds    []schemas.Command
	carts   []schemas.CartCommand
	outcome string
	reason  string
	err     error
}

func (f *fake) Do(_ context.Context, cmd schemas.Command) (schemas.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fe := cmd.Validate(); fe != nil {
		return schemas.Result{}, fmt.Errorf("%w: %w", client.ErrInvalid, fe)
	}
	f.cmds = append(f.cmds, cmd)
	if f.err != nil {
		return schemas.Result{}, &client.CallError{CommandID: cmd.CommandID, Kind: f.err, Step: "test", Err: context.DeadlineExceeded}
	}
	return schemas.Result{CommandID: cmd.CommandID, Type: cmd.Type, SKU: cmd.SKU, ReservationID: cmd.ReservationID,
		Outcome: f.outcome, Reason: f.reason}, nil
}

func (f *fake) DoCart(_ context.Context, cmd schemas.CartCommand) (schemas.CartResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fe := cmd.Validate(); fe != nil {
		return schemas.CartResult{}, fmt.Errorf("%w: %w", client.ErrInvalid, fe)
	}
	f.carts = append(f.carts, cmd)
	if f.err != nil {
		return schemas.CartResult{}, &client.CallError{CommandID: cmd.CommandID, Kind: f.err, Step: "test", Err: context.DeadlineExceeded}
	}
	return schemas.CartResult{CommandID: cmd.CommandID, Type: cmd.Type, CartID: cmd.CartID, Outcome: f.outcome,
		Reason: f.reason, Lines: []schemas.CartLine{}}, nil
}

func do(h http.Handler, method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func i64(v int64) *int64 { return &v }

// Each route builds the contract's command from path and body.
func TestRoutesBuildCommands(t *testing.T) {
	for _, tc := range []struct {
		path, body string
		want       schemas.Command
	}{
		{"/v1/reservations", `{"sku":"S-1","reservation_id":"r-1","quantity":2,"ttl_seconds":60,"cart_id":"k","store_id":"st","reason":"why"}`,
			schemas.Command{Type: schemas.TypeReserve, SKU: "S-1", ReservationID: "r-1", Quantity: i64(2), TTLSeconds: i64(60),
				CartID: "k", StoreID: "st", Reason: "why"}},
		{"/v1/reservations/S-1/r-1/adjust", `{"quantity":3}`,
			schemas.Command{Type: schemas.TypeAdjust, SKU: "S-1", ReservationID: "r-1", Quantity: i64(3)}},
		{"/v1/reservations/S-1/r-1/release", ``,
			schemas.Command{Type: schemas.TypeRelease, SKU: "S-1", ReservationID: "r-1"}},
		{"/v1/reservations/S-1/r-1/extend", `{"ttl_seconds":30}`,
			schemas.Command{Type: schemas.TypeExtend, SKU: "S-1", ReservationID: "r-1", TTLSeconds: i64(30)}},
		{"/v1/reservations/S-1/r%2F1/commit", `{"order_id":"o-1"}`,
			schemas.Command{Type: schemas.TypeCommit, SKU: "S-1", ReservationID: "r/1", OrderID: "o-1"}},
		{"/v1/stock/S-1", `{"on_hand":10,"low_stock_threshold":2,"expected_on_hand":4}`,
			schemas.Command{Type: schemas.TypeStockSet, SKU: "S-1", OnHand: i64(10), LowStockThreshold: i64(2), ExpectedOnHand: i64(4)}},
		{"/v1/stock/S-1", `{"delta":-2}`,
			schemas.Command{Type: schemas.TypeStockAdjust, SKU: "S-1", Delta: i64(-2)}},
	} {
		f := &fake{outcome: schemas.OutcomeAccepted}
		w := do(httpapi.New(f, httpapi.Config{}), http.MethodPost, tc.path, tc.body, "Idempotency-Key", "key-1")
		require.Equal(t, http.StatusOK, w.Code, "%s %s", tc.path, w.Body)
		require.Len(t, f.cmds, 1)
		got := f.cmds[0]
		tc.want.CommandID = "key-1"
		got.IssuedAt = ""
		assert.Equal(t, tc.want, got, tc.path)
		assert.Equal(t, "key-1", w.Header().Get("Idempotency-Key"))
		var res schemas.Result
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &res))
		assert.Equal(t, "key-1", res.CommandID)
	}
	for _, tc := range []struct {
		path, body string
		want       schemas.CartCommand
	}{
		{"/v1/reservations", `{"cart_id":"k","items":[{"sku":"A","quantity":1},{"sku":"B","quantity":2,"reservation_id":"rb"}],"ttl_seconds":60}`,
			schemas.CartCommand{Type: schemas.TypeCartReserve, CartID: "k", TTLSeconds: i64(60),
				Items: []schemas.CartItem{{SKU: "A", Quantity: i64(1)}, {SKU: "B", Quantity: i64(2), ReservationID: "rb"}}}},
		{"/v1/carts/k/reserve", `{"items":[{"sku":"A","quantity":1}]}`,
			schemas.CartCommand{Type: schemas.TypeCartReserve, CartID: "k", Items: []schemas.CartItem{{SKU: "A", Quantity: i64(1)}}}},
		{"/v1/carts/k/release", `{}`, schemas.CartCommand{Type: schemas.TypeCartRelease, CartID: "k"}},
		{"/v1/carts/k/commit", `{"order_id":"o"}`, schemas.CartCommand{Type: schemas.TypeCartCommit, CartID: "k", OrderID: "o"}},
	} {
		f := &fake{outcome: schemas.OutcomeAccepted}
		w := do(httpapi.New(f, httpapi.Config{}), http.MethodPost, tc.path, tc.body, "Idempotency-Key", "key-2")
		require.Equal(t, http.StatusOK, w.Code, "%s %s", tc.path, w.Body)
		require.Len(t, f.carts, 1)
		got := f.carts[0]
		tc.want.CommandID = "key-2"
		got.IssuedAt = ""
		assert.Equal(t, tc.want, got, tc.path)
		var res schemas.CartResult
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &res))
		assert.Equal(t, "key-2", res.CommandID)
	}
}

// handlerStatusCodes lists the status codes the handler can answer: every
// http.StatusXxx constant its source (the package's non-test Go files) names,
// resolved through net/http's own declarations (status.go of the Go tree
// that runs the test). A code added to the handler shows up here, so the
// tests below cannot miss it.
func handlerStatusCodes(t *testing.T) []int {
	t.Helper()
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go tool on PATH: the test reads net/http's status codes from the Go tree")
	out, err := exec.Command(goTool, "env", "GOROOT").Output()
	require.NoError(t, err, "go env GOROOT")
	fset := token.NewFileSet()
	statusFile := filepath.Join(strings.TrimSpace(string(out)), "src", "net", "http", "status.go")
	decl, err := parser.ParseFile(fset, statusFile, nil, 0)
	require.NoError(t, err)
	values := map[string]int{}
	ast.Inspect(decl, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok && len(vs.Names) == 1 && len(vs.Values) == 1 {
			if lit, ok := vs.Values[0].(*ast.BasicLit); ok && lit.Kind == token.INT {
				if v, err := strconv.Atoi(lit.Value); err == nil {
					values[vs.Names[0].Name] = v
				}
			}
		}
		return true
	})
	require.Equal(t, 200, values["StatusOK"], "%s: no StatusOK = 200", statusFile)

	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	var codes []int
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := parser.ParseFile(fset, f, nil, 0)
		require.NoError(t, err)
		ast.Inspect(src, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok || !strings.HasPrefix(sel.Sel.Name, "Status") {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "http" {
				v, ok := values[sel.Sel.Name]
				require.True(t, ok, "%s: http.%s is not a status code of %s", fset.Position(sel.Pos()), sel.Sel.Name, statusFile)
				if !slices.Contains(codes, v) {
					codes = append(codes, v)
				}
			}
			return true
		})
	}
	slices.Sort(codes)
	require.Contains(t, codes, http.StatusOK, "the handler's status codes, from its source")
	return codes
}

// The status codes, and the bodies of the failures; every code the handler
// can answer (handlerStatusCodes) has a case.
func TestStatusCodes(t *testing.T) {
	answered := map[int]bool{}
	for _, tc := range []struct {
		name            string
		f               *fake
		path, body, key string
		code            int
		field           string // of a 422 ErrorBody
	}{
		{"accepted", &fake{outcome: "accepted"}, "/v1/stock/S", `{"on_hand":1}`, "", 200, ""},
		{"rejected", &fake{outcome: "rejected", reason: "insufficient_stock"}, "/v1/reservations", `{"sku":"S","reservation_id":"r","quantity":1}`, "", 409, ""},
		{"processor's invalid_command", &fake{outcome: "rejected", reason: "invalid_command"}, "/v1/stock/S", `{"on_hand":1}`, "", 422, ""},
		{"cart rejected", &fake{outcome: "rejected", reason: "cart_busy"}, "/v1/carts/k/release", ``, "", 409, ""},
		{"missing quantity", &fake{}, "/v1/reservations", `{"sku":"S","reservation_id":"r"}`, "", 422, "quantity"},
		{"bad sku", &fake{}, "/v1/reservations/bad%20sku/r/release", ``, "", 422, "sku"},
		{"wrong JSON type", &fake{}, "/v1/reservations", `{"sku":"S","reservation_id":"r","quantity":"2"}`, "", 422, "quantity"},
		{"unknown field", &fake{}, "/v1/reservations/S/r/release", `{"quantity":2}`, "", 422, "quantity"},
		{"command_id in the body", &fake{}, "/v1/stock/S", `{"command_id":"x","on_hand":1}`, "", 422, "command_id"},
		{"not an object", &fake{}, "/v1/stock/S", `[1]`, "", 422, ""},
		{"on_hand and delta", &fake{}, "/v1/stock/S", `{"on_hand":1,"delta":1}`, "", 422, "delta"},
		{"neither", &fake{}, "/v1/stock/S", `{}`, "", 422, "on_hand"},
		{"commit without order", &fake{}, "/v1/reservations/S/r/commit", `{}`, "", 422, "order_id"},
		{"batch line", &fake{}, "/v1/reservations", `{"cart_id":"k","items":[{"sku":"A","quantity":0}]}`, "", 422, "items[0].quantity"},
		{"batch without cart", &fake{}, "/v1/reservations", `{"items":[{"sku":"A","quantity":1}]}`, "", 422, "cart_id"},
		{"batch with sku", &fake{}, "/v1/reservations", `{"cart_id":"k","sku":"A","items":[{"sku":"A","quantity":1}]}`, "", 422, "items"},
		{"key too long", &fake{}, "/v1/stock/S", `{"on_hand":1}`, strings.Repeat("k", 129), 422, "Idempotency-Key"},
		{"too large", &fake{}, "/v1/stock/S", `{"reason":"` + strings.Repeat("x", httpapi.DefaultMaxBodyBytes) + `"}`, "", 413, ""},
		{"no result", &fake{err: client.ErrNoResult}, "/v1/stock/S", `{"on_hand":1}`, "k-504", 504, ""},
		{"unavailable", &fake{err: client.ErrUnavailable}, "/v1/carts/k/commit", `{"order_id":"o"}`, "k-503", 503, ""},
	} {
		answered[tc.code] = true
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.key != "" {
				hdr = []string{"Idempotency-Key", tc.key}
			}
			w := do(httpapi.New(tc.f, httpapi.Config{}), http.MethodPost, tc.path, tc.body, hdr...)
			require.Equal(t, tc.code, w.Code, w.Body.String())
			assert.Equal(t, "application/json", w.Header().Get("Content-Type"))
			var eb httpapi.ErrorBody
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &eb), w.Body.String())
			if tc.field != "" {
				assert.Equal(t, tc.field, eb.Field, w.Body.String())
				assert.Empty(t, tc.f.cmds, "nothing sent")
			}
			if tc.code == 503 || tc.code == 504 {
				assert.Equal(t, tc.key, eb.CommandID, "the id to retry with")
				assert.Contains(t, eb.Error, "Idempotency-Key: "+tc.key)
			}
			if tc.code < 400 || tc.code == 503 || tc.code == 504 {
				id := w.Header().Get("Idempotency-Key")
				assert.NotEmpty(t, id)
				if tc.key != "" {
					assert.Equal(t, tc.key, id)
				}
			}
		})
	}
	t.Run("unreadable body", func(t *testing.T) {
		f := &fake{outcome: "accepted"}
		w := httptest.NewRecorder()
		httpapi.New(f, httpapi.Config{}).ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/stock/S",
			iotest.ErrReader(errors.New("connection reset by peer"))))
		answered[w.Code] = true
		require.Equal(t, http.StatusBadRequest, w.Code, w.Body.String())
		var eb httpapi.ErrorBody
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &eb), w.Body.String())
		assert.Contains(t, eb.Error, "connection reset by peer")
		assert.Empty(t, f.cmds, "nothing sent")
	})
	for _, c := range handlerStatusCodes(t) {
		assert.True(t, answered[c], "the handler can answer %d: no case of TestStatusCodes gets it", c)
	}
}

// Without Idempotency-Key, every request gets a new id, returned in the header.
func TestGeneratedIdempotencyKey(t *testing.T) {
	f := &fake{outcome: "accepted"}
	h := httpapi.New(f, httpapi.Config{})
	a := do(h, http.MethodPost, "/v1/stock/S", `{"on_hand":1}`).Header().Get("Idempotency-Key")
	b := do(h, http.MethodPost, "/v1/stock/S", `{"on_hand":1}`).Header().Get("Idempotency-Key")
	assert.NotEmpty(t, a)
	assert.NotEqual(t, a, b)
	assert.Equal(t, []string{a, b}, []string{f.cmds[0].CommandID, f.cmds[1].CommandID})
}

// openAPI is the part of the OpenAPI document the checks read.
type openAPI struct {
	OpenAPI string                                 `yaml:"openapi"`
	Paths   map[string]map[string]openAPIOperation `yaml:"paths"`
}

type openAPIOperation struct {
	Responses map[string]any `yaml:"responses"`
}

// The OpenAPI document and the handler agree: every documented route and
// method is served, every served route is documented, and every status code
// a route answers is documented for it.
func TestOpenAPIMatchesHandler(t *testing.T) {
	var doc openAPI
	require.NoError(t, yaml.Unmarshal(httpapi.OpenAPI, &doc))
	require.Equal(t, "3.1.0", doc.OpenAPI)

	var documented []string
	for path, ops := range doc.Paths {
		for m := range ops {
			documented = append(documented, strings.ToUpper(m)+" "+path)
		}
	}
	var served []string
	for _, r := range httpapi.Routes {
		served = append(served, r.Method+" "+r.Pattern)
	}
	slices.Sort(documented)
	slices.Sort(served)
	assert.Equal(t, served, documented, "documented routes = served routes")

	// Each documented route answers (not 404/405) at a concrete path.
	concrete := strings.NewReplacer("{sku}", "S-1", "{reservation_id}", "r-1", "{cart_id}", "k-1")
	h := httpapi.New(&fake{outcome: "accepted"}, httpapi.Config{})
	for _, r := range documented {
		method, path, _ := strings.Cut(r, " ")
		w := do(h, method, concrete.Replace(path), `{}`)
		assert.NotContains(t, []int{404, 405}, w.Code, "%s: %s", r, w.Body)
	}

	// The codes every command route can answer (those the handler's source
	// names), each documented for it.
	var codes []string
	for _, c := range handlerStatusCodes(t) {
		codes = append(codes, strconv.Itoa(c))
	}
	for path, ops := range doc.Paths {
		for m, op := range ops {
			if m != "post" {
				continue
			}
			for _, c := range codes {
				assert.Contains(t, op.Responses, c, "POST %s documents %s", path, c)
			}
			for c := range op.Responses {
				assert.Contains(t, codes, c, "POST %s documents %s, which the handler never answers", path, c)
			}
		}
	}
	// The refs to the contract's schemas point at files that exist.
	for _, ref := range []string{"result.schema.json", "cart-result.schema.json"} {
		assert.Contains(t, string(httpapi.OpenAPI), "../../schemas/json/"+ref)
		_, err := os.ReadFile("../../schemas/json/" + ref)
		assert.NoError(t, err)
	}
	w := do(h, http.MethodGet, "/v1/openapi.yaml", "")
	assert.Equal(t, 200, w.Code)
	assert.Equal(t, httpapi.OpenAPI, w.Body.Bytes())
}
