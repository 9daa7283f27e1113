// Package httpapi is the HTTP API of the reservation pipeline: each request
// becomes one command of the contract (or a cart command), sent through the
// request/reply client (package client), and its result is the response.
//
// Routes (openapi.yaml in this folder is the reference, checked against
// Routes by the tests):
//
//	POST /v1/reservations                          reserve; with "items": cart.reserve (all or nothing)
//	POST /v1/reservations/{sku}/{reservation_id}/adjust|release|extend|commit
//	POST /v1/stock/{sku}                           stock.set ("on_hand") or stock.adjust ("delta")
//	POST /v1/carts/{cart_id}/reserve|release|commit
//	GET  /v1/openapi.yaml                          the OpenAPI document
//
// Bodies use the contract's field names; the response body is the contract's
// result JSON (result or cart result). The Idempotency-Key header is the
// command_id: generated when absent, always returned in the response's
// Idempotency-Key header. A retry with the same key is answered with the
// original decision (duplicate: true), never decided twice.
//
// Status codes: 200 accepted; 409 rejected (the result, with its reason);
// 422 invalid input, caught before sending or rejected invalid_command (the
// body names the field; a body that is not a JSON object, an unknown field);
// 400 a request body that could not be read; 413 body too large; 503 Kafka unavailable or the
// cart topics missing; 504 no result in time (the body names the command id
// to retry with).
package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/schemas"
)

// Caller sends a command and returns its result: *client.Client.
type Caller interface {
	Do(ctx context.Context, cmd schemas.Command) (schemas.Result, error)
	DoCart(ctx context.Context, cmd schemas.CartCommand) (schemas.CartResult, error)
}

// Config tunes the handler; zero fields take the defaults.
type Config struct {
	// Timeout bounds the wait for a result (default 5 s): then 504.
	Timeout time.Duration
	// ReadTimeout bounds reading the request body (default 10 s).
	ReadTimeout time.Duration
	// MaxBodyBytes bounds the request body (default 256 KiB; a cart.reserve
	// of 100 lines with long ids stays far below): then 413.
	MaxBodyBytes int64
	// NewID makes the command id of a request without Idempotency-Key
	// (default client.NewID).
	NewID func() string
	// Logger logs failures other than the caller's (default slog.Default()).
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultTimeout      = 5 * time.Second
	DefaultReadTimeout  = 10 * time.Second
	DefaultMaxBodyBytes = 256 << 10
)

// OpenAPI is the OpenAPI 3.1 document of the routes (openapi.yaml), served at
// GET /v1/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// HeaderIdempotencyKey carries the command_id, in requests and responses.
const HeaderIdempotencyKey = "Idempotency-Key"

// Route is one method and path pattern the handler serves.
type Route struct{ Method, Pattern string }

// Routes are the routes Register adds, in net/http pattern syntax.
var Routes = []Route{
	{http.MethodPost, "/v1/reservations"},
	{http.MethodPost, "/v1/reservations/{sku}/{reservation_id}/adjust"},
	{http.MethodPost, "/v1/reservations/{sku}/{reservation_id}/release"},
	{http.MethodPost, "/v1/reservations/{sku}/{reservation_id}/extend"},
	{http.MethodPost, "/v1/reservations/{sku}/{reservation_id}/commit"},
	{http.MethodPost, "/v1/stock/{sku}"},
	{http.MethodPost, "/v1/carts/{cart_id}/reserve"},
	{http.MethodPost, "/v1/carts/{cart_id}/release"},
	{http.MethodPost, "/v1/carts/{cart_id}/commit"},
	{http.MethodGet, "/v1/openapi.yaml"},
}

// Handler serves the routes.
type Handler struct {
	c   Caller
	cfg Config
	mux *http.ServeMux
}

// New returns the handler of c's commands.
func New(c Caller, cfg Config) *Handler {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.NewID == nil {
		cfg.NewID = client.NewID
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{c: c, cfg: cfg, mux: http.NewServeMux()}
	h.Register(h.mux)
	return h
}

// ServeHTTP serves the routes (404 for other paths, 405 for other methods).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Register adds the routes to mux, e.g. the admin listener's, whose GET
// routes under /v1/ stay as they are.
func (h *Handler) Register(mux *http.ServeMux) {
	handlers := map[string]func(*request){
		"/v1/reservations": h.reserve,
		"/v1/reservations/{sku}/{reservation_id}/adjust":  h.reservationCommand(schemas.TypeAdjust),
		"/v1/reservations/{sku}/{reservation_id}/release": h.reservationCommand(schemas.TypeRelease),
		"/v1/reservations/{sku}/{reservation_id}/extend":  h.reservationCommand(schemas.TypeExtend),
		"/v1/reservations/{sku}/{reservation_id}/commit":  h.reservationCommand(schemas.TypeCommit),
		"/v1/stock/{sku}":             h.stock,
		"/v1/carts/{cart_id}/reserve": h.cartCommand(schemas.TypeCartReserve),
		"/v1/carts/{cart_id}/release": h.cartCommand(schemas.TypeCartRelease),
		"/v1/carts/{cart_id}/commit":  h.cartCommand(schemas.TypeCartCommit),
	}
	mux.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(OpenAPI)
	})
	for _, rt := range Routes {
		f, ok := handlers[rt.Pattern]
		if !ok {
			continue
		}
		mux.HandleFunc(rt.Method+" "+rt.Pattern, func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, f) })
	}
}

// request is one call in progress.
type request struct {
	w  http.ResponseWriter
	r  *http.Request
	id string
	// body is the request body as JSON fields (empty when there is none).
	body map[string]json.RawMessage
}

// ErrorBody is the response body of a request that got no result: 413, 422
// (invalid before sending), 503 and 504.
type ErrorBody struct {
	// Error says what went wrong.
	Error string `json:"error"`
	// Field names the field at fault (422): a body field, a path parameter
	// or the Idempotency-Key header.
	Field string `json:"field,omitempty"`
	// CommandID is the command id of the request: retry with it in the
	// Idempotency-Key header (503, 504).
	CommandID string `json:"command_id,omitempty"`
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, f func(*request)) {
	id := r.Header.Get(HeaderIdempotencyKey)
	if id == "" {
		id = h.cfg.NewID()
	} else if utf8.RuneCountInString(id) > schemas.MaxIDLen {
		writeJSON(w, http.StatusUnprocessableEntity, ErrorBody{Error: fmt.Sprintf("want 1..%d characters", schemas.MaxIDLen),
			Field: HeaderIdempotencyKey})
		return
	}
	w.Header().Set(HeaderIdempotencyKey, id)
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.cfg.ReadTimeout))
	body, status, eb := readBody(w, r, h.cfg.MaxBodyBytes)
	if status != 0 {
		writeJSON(w, status, eb)
		return
	}
	f(&request{w: w, r: r, id: id, body: body})
}

// readBody reads the JSON object of the request (none: empty).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) (map[string]json.RawMessage, int, ErrorBody) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, http.StatusRequestEntityTooLarge, ErrorBody{Error: fmt.Sprintf("request body over %d bytes", limit)}
	case err != nil:
		return nil, http.StatusBadRequest, ErrorBody{Error: "read request body: " + err.Error()}
	}
	body := map[string]json.RawMessage{}
	if len(strings.TrimSpace(string(b))) == 0 {
		return body, 0, ErrorBody{}
	}
	if err := json.Unmarshal(b, &body); err != nil || body == nil {
		return nil, http.StatusUnprocessableEntity, ErrorBody{Error: "request body: want a JSON object"}
	}
	return body, 0, ErrorBody{}
}

// fields decodes the body into dst, a struct of the route's fields (JSON
// names of the contract); a field of another name or of the wrong JSON type
// is a 422 naming it. It returns false when it answered.
func (q *request) fields(dst any) bool {
	raw, _ := json.Marshal(q.body)
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		return true
	}
	var te *json.UnmarshalTypeError
	field, msg := "", err.Error()
	switch {
	case errors.As(err, &te):
		field, msg = te.Field, fmt.Sprintf("want %s, got JSON %s", jsonType(te.Type.Kind().String()), te.Value)
	case strings.HasPrefix(msg, "json: unknown field "):
		field = strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`)
		msg = "unknown field for this route"
		if field == "command_id" {
			msg = "send the command id in the " + HeaderIdempotencyKey + " header"
		}
	}
	writeJSON(q.w, http.StatusUnprocessableEntity, ErrorBody{Error: msg, Field: field})
	return false
}

func jsonType(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"):
		return "an integer"
	case kind == "string":
		return "a string"
	case kind == "slice":
		return "an array"
	case kind == "struct", kind == "map":
		return "an object"
	}
	return kind
}

// Bodies of the routes: the contract's fields that each takes.
type (
	reserveBody struct {
		SKU           string `json:"sku"`
		ReservationID string `json:"reservation_id"`
		Quantity      *int64 `json:"quantity"`
		TTLSeconds    *int64 `json:"ttl_seconds"`
		CartID        string `json:"cart_id"`
		StoreID       string `json:"store_id"`
		Reason        string `json:"reason"`
		// Items makes the request a cart.reserve of cart_id.
		Items []schemas.CartItem `json:"items"`
	}
	reservationBody struct {
		Quantity   *int64 `json:"quantity"`
		TTLSeconds *int64 `json:"ttl_seconds"`
		OrderID    string `json:"order_id"`
		Reason     string `json:"reason"`
	}
	stockBody struct {
		OnHand            *int64 `json:"on_hand"`
		Delta             *int64 `json:"delta"`
		ExpectedOnHand    *int64 `json:"expected_on_hand"`
		LowStockThreshold *int64 `json:"low_stock_threshold"`
		Reason            string `json:"reason"`
	}
	cartBody struct {
		Items      []schemas.CartItem `json:"items"`
		TTLSeconds *int64             `json:"ttl_seconds"`
		OrderID    string             `json:"order_id"`
		Reason     string             `json:"reason"`
	}
)

func (h *Handler) reserve(q *request) {
	var b reserveBody
	if !q.fields(&b) {
		return
	}
	if b.Items != nil {
		if b.SKU != "" || b.ReservationID != "" || b.Quantity != nil || b.StoreID != "" {
			q.invalid("items", "a batch takes cart_id, items, ttl_seconds and reason: sku, reservation_id, quantity and store_id go in the lines")
			return
		}
		h.cart(q, schemas.CartCommand{CommandID: q.id, Type: schemas.TypeCartReserve, CartID: b.CartID, Items: b.Items,
			TTLSeconds: b.TTLSeconds, Reason: b.Reason})
		return
	}
	h.sku(q, schemas.Command{CommandID: q.id, Type: schemas.TypeReserve, SKU: b.SKU, ReservationID: b.ReservationID,
		Quantity: b.Quantity, TTLSeconds: b.TTLSeconds, CartID: b.CartID, StoreID: b.StoreID, Reason: b.Reason})
}

// reservationCommand serves .../{sku}/{reservation_id}/<typ>: the fields
// other than typ's are refused.
func (h *Handler) reservationCommand(typ string) func(*request) {
	allowed := map[string][]string{
		schemas.TypeAdjust:  {"quantity"},
		schemas.TypeRelease: {},
		schemas.TypeExtend:  {"ttl_seconds"},
		schemas.TypeCommit:  {"order_id"},
	}[typ]
	return func(q *request) {
		if !q.only(append(allowed, "reason")...) {
			return
		}
		var b reservationBody
		if !q.fields(&b) {
			return
		}
		h.sku(q, schemas.Command{CommandID: q.id, Type: typ, SKU: q.r.PathValue("sku"),
			ReservationID: q.r.PathValue("reservation_id"), Quantity: b.Quantity, TTLSeconds: b.TTLSeconds,
			OrderID: b.OrderID, Reason: b.Reason})
	}
}

func (h *Handler) stock(q *request) {
	var b stockBody
	if !q.fields(&b) {
		return
	}
	cmd := schemas.Command{CommandID: q.id, SKU: q.r.PathValue("sku"), ExpectedOnHand: b.ExpectedOnHand, Reason: b.Reason}
	switch {
	case b.OnHand != nil && b.Delta != nil:
		q.invalid("delta", "give on_hand (stock.set) or delta (stock.adjust), not both")
		return
	case b.OnHand != nil:
		cmd.Type, cmd.OnHand, cmd.LowStockThreshold = schemas.TypeStockSet, b.OnHand, b.LowStockThreshold
	case b.Delta != nil:
		if b.LowStockThreshold != nil {
			q.invalid("low_stock_threshold", "only with on_hand (stock.set)")
			return
		}
		cmd.Type, cmd.Delta = schemas.TypeStockAdjust, b.Delta
	default:
		q.invalid("on_hand", "required: on_hand (stock.set) or delta (stock.adjust)")
		return
	}
	h.sku(q, cmd)
}

func (h *Handler) cartCommand(typ string) func(*request) {
	allowed := map[string][]string{
		schemas.TypeCartReserve: {"items", "ttl_seconds"},
		schemas.TypeCartRelease: {},
		schemas.TypeCartCommit:  {"order_id"},
	}[typ]
	return func(q *request) {
		if !q.only(append(allowed, "reason")...) {
			return
		}
		var b cartBody
		if !q.fields(&b) {
			return
		}
		h.cart(q, schemas.CartCommand{CommandID: q.id, Type: typ, CartID: q.r.PathValue("cart_id"), Items: b.Items,
			TTLSeconds: b.TTLSeconds, OrderID: b.OrderID, Reason: b.Reason})
	}
}

// only answers 422 when the body has a field other than names.
func (q *request) only(names ...string) bool {
	for f := range q.body {
		ok := false
		for _, n := range names {
			ok = ok || f == n
		}
		if !ok {
			q.invalid(f, "unknown field for this route")
			return false
		}
	}
	return true
}

func (q *request) invalid(field, msg string) {
	writeJSON(q.w, http.StatusUnprocessableEntity, ErrorBody{Error: msg, Field: field})
}

func (h *Handler) sku(q *request, cmd schemas.Command) {
	ctx, cancel := context.WithTimeout(q.r.Context(), h.cfg.Timeout)
	defer cancel()
	res, err := h.c.Do(ctx, cmd)
	if err != nil {
		h.fail(q, err)
		return
	}
	writeRaw(q.w, status(res.Outcome, res.Reason), schemas.AppendResult(nil, &res))
}

// cart sends a cart command.
func (h *Handler) cart(q *request, cmd schemas.CartCommand) {
	ctx, cancel := context.WithTimeout(q.r.Context(), h.cfg.Timeout)
	defer cancel()
	res, err := h.c.DoCart(ctx, cmd)
	if err != nil {
		h.fail(q, err)
		return
	}
	writeRaw(q.w, status(res.Outcome, res.Reason), schemas.AppendCartResult(nil, &res))
}

// status maps a result to its status code.
func status(outcome, reason string) int {
	switch {
	case outcome == schemas.OutcomeAccepted:
		return http.StatusOK
	case reason == schemas.ReasonInvalidCommand:
		return http.StatusUnprocessableEntity
	default:
		return http.StatusConflict
	}
}

// fail answers a call that got no result.
func (h *Handler) fail(q *request, err error) {
	var fe *schemas.FieldError
	switch {
	case errors.As(err, &fe):
		field := fe.Field
		if field == "command_id" {
			field = HeaderIdempotencyKey
		}
		writeJSON(q.w, http.StatusUnprocessableEntity, ErrorBody{Error: fe.Msg, Field: field})
	case q.r.Context().Err() != nil:
		return // the caller went away: nobody to answer
	case errors.Is(err, client.ErrNoResult):
		writeJSON(q.w, http.StatusGatewayTimeout, ErrorBody{CommandID: q.id,
			Error: fmt.Sprintf("no result within %s: send the request again with %s: %s", h.cfg.Timeout, HeaderIdempotencyKey, q.id)})
	default:
		h.cfg.Logger.Warn("http api: command not sent", "command_id", q.id, "err", err)
		q.w.Header().Set("Retry-After", "1")
		writeJSON(q.w, http.StatusServiceUnavailable, ErrorBody{CommandID: q.id,
			Error: fmt.Sprintf("%v: send the request again with %s: %s", err, HeaderIdempotencyKey, q.id)})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	writeRaw(w, code, b)
}

func writeRaw(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
