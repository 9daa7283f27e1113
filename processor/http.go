package processor

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
)

// QueryHandler serves interactive queries from this instance's local state:
//
//	GET /v1/stock/{sku}                             the stock entity (changelog shape)
//	GET /v1/stock/{sku}/reservations/{reservation}  the reservation entity (changelog shape)
//
// A SKU containing '/' is sent percent-encoded (%2F). Answers: 200 with the
// entity; 404 when the owner has no such entity; 503 with Retry-After while
// the partition restores or the processor is not in its group; 307 to the
// same path on the owner when another instance owns the SKU's partition and
// advertises its address (Kafka Streams' application.server), 503 when the
// owner is unknown (a rebalance is under way). Errors are JSON objects
// {"error": "...", "owner": "..."}.
//
// The cart role serves instead:
//
//	GET /v1/carts/{cart}   the cart entity: holds, the saga in flight, the queue
func (p *Processor) QueryHandler() http.Handler {
	mux := http.NewServeMux()
	p.role.routes(p, mux)
	return mux
}

func (p *Processor) answer(w http.ResponseWriter, r *http.Request, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	var no *NotOwnerError
	switch {
	case err == nil:
		_ = json.NewEncoder(w).Encode(v)
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "not found", "")
	case errors.As(err, &no) && no.Owner != "":
		u := url.URL{Scheme: "http", Host: no.Owner, RawPath: r.URL.EscapedPath(), Path: r.URL.Path, RawQuery: r.URL.RawQuery}
		w.Header().Set("Location", u.String())
		writeError(w, http.StatusTemporaryRedirect, err.Error(), no.Owner)
	case errors.As(err, &no), errors.Is(err, ErrRestoring), errors.Is(err, ErrNotRunning):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, err.Error(), "")
	default:
		writeError(w, http.StatusInternalServerError, err.Error(), "")
	}
}

func writeError(w http.ResponseWriter, code int, msg, owner string) {
	w.WriteHeader(code)
	body := map[string]string{"error": msg}
	if owner != "" {
		body["owner"] = owner
	}
	_ = json.NewEncoder(w).Encode(body)
}
