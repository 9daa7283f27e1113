package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeRegistry is the part of the Confluent Schema Registry API the command
// uses, with the checks a registry makes on references: each must name a
// registered subject version, and (as JSON Schema references) every $ref of
// the schema, resolved against its $id, must be the name of one of them.
type fakeRegistry struct {
	mu       sync.Mutex
	subjects map[string][]stored // versions, oldest first
	nextID   int
}

type stored struct {
	id     int
	schema string
	refs   []reference
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(code int, format string, args ...any) {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"error_code": code, "message": fmt.Sprintf(format, args...)})
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != contentType {
		fail(http.StatusBadRequest, "want POST with %s", contentType)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/subjects/")
	if !ok {
		fail(http.StatusNotFound, "no route %s", r.URL.Path)
		return
	}
	escaped, register := strings.CutSuffix(rest, "/versions")
	subject, err := url.PathUnescape(escaped)
	if err != nil {
		fail(http.StatusBadRequest, "subject: %v", err)
		return
	}
	var req struct {
		SchemaType string      `json:"schemaType"`
		Schema     string      `json:"schema"`
		References []reference `json:"references"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.SchemaType != "JSON" {
		fail(http.StatusUnprocessableEntity, "want a JSON schema: %v", err)
		return
	}
	for i, s := range f.subjects[subject] {
		if s.schema == req.Schema && slices.Equal(s.refs, req.References) {
			if register {
				_ = json.NewEncoder(w).Encode(map[string]any{"id": s.id})
			} else {
				_ = json.NewEncoder(w).Encode(map[string]any{"subject": subject, "id": s.id,
					"version": i + 1, "schema": s.schema})
			}
			return
		}
	}
	if !register {
		fail(http.StatusNotFound, "schema not found in %s", subject)
		return
	}
	var doc any
	if err := json.Unmarshal([]byte(req.Schema), &doc); err != nil {
		fail(http.StatusUnprocessableEntity, "schema: %v", err)
		return
	}
	names := map[string]bool{}
	for _, ref := range req.References {
		versions := f.subjects[ref.Subject]
		if ref.Version < 1 || ref.Version > len(versions) {
			fail(http.StatusUnprocessableEntity, "reference %s: no version %d of subject %s", ref.Name, ref.Version, ref.Subject)
			return
		}
		var target map[string]any
		_ = json.Unmarshal([]byte(versions[ref.Version-1].schema), &target)
		if target["$id"] != ref.Name {
			fail(http.StatusUnprocessableEntity, "reference %s: subject %s version %d has $id %v", ref.Name, ref.Subject, ref.Version, target["$id"])
			return
		}
		names[ref.Name] = true
	}
	base, err := url.Parse(doc.(map[string]any)["$id"].(string))
	if err != nil {
		fail(http.StatusUnprocessableEntity, "$id: %v", err)
		return
	}
	var unresolved []string
	collectRefs(doc, func(ref string) {
		u, err := base.Parse(ref)
		if err != nil {
			unresolved = append(unresolved, ref)
			return
		}
		u.Fragment = ""
		if u.String() != base.String() && !names[u.String()] {
			unresolved = append(unresolved, ref+" ("+u.String()+")")
		}
	})
	if len(unresolved) > 0 {
		fail(http.StatusUnprocessableEntity, "$ref without a reference: %v", unresolved)
		return
	}
	f.nextID++
	f.subjects[subject] = append(f.subjects[subject], stored{id: f.nextID, schema: req.Schema, refs: req.References})
	_ = json.NewEncoder(w).Encode(map[string]any{"id": f.nextID})
}

func runRegistry(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"-dir", "../../schemas/json"}, args...), &stdout, &stderr,
		func(string) string { return "" })
	t.Logf("registry %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String()
}

func TestRegister(t *testing.T) {
	reg := &fakeRegistry{subjects: map[string][]stored{}}
	srv := httptest.NewServer(reg)
	defer srv.Close()

	code, _ := runRegistry(t, "-url", srv.URL)
	require.Equal(t, 0, code)

	var subjects []string
	for s := range reg.subjects {
		subjects = append(subjects, s)
	}
	for _, topic := range topics {
		assert.Contains(t, subjects, "reservations."+topic+"-value")
	}
	refSubjects := func(subject string) []string {
		versions := reg.subjects[subject]
		require.Len(t, versions, 1, subject)
		var out []string
		for _, r := range versions[0].refs {
			out = append(out, r.Subject)
		}
		return out
	}
	assert.ElementsMatch(t, []string{"reservations.command.stock.set", "reservations.command.stock.adjust",
		"reservations.command.reserve", "reservations.command.adjust", "reservations.command.release",
		"reservations.command.extend", "reservations.command.commit", "reservations.command.prepare",
		"reservations.command.unprepare"}, refSubjects("reservations.commands-value"))
	assert.ElementsMatch(t, []string{"reservations.changelog.stock", "reservations.changelog.reservation",
		"reservations.changelog.command"}, refSubjects("reservations.changelog-value"))
	// Nested references: the changelog entities refer to result.schema.json.
	assert.Equal(t, []string{"reservations.result"}, refSubjects("reservations.changelog.command"))
	assert.Empty(t, refSubjects("reservations.result"))

	// Again: nothing new.
	before := len(reg.subjects)
	code, out := runRegistry(t, "-url", srv.URL)
	require.Equal(t, 0, code)
	assert.Len(t, reg.subjects, before)
	for s, versions := range reg.subjects {
		assert.Len(t, versions, 1, s)
	}
	assert.Contains(t, out, "topic.commands.schema.json: subject reservations.commands-value version 1")
}

func TestRegisterNoCart(t *testing.T) {
	reg := &fakeRegistry{subjects: map[string][]stored{}}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	code, _ := runRegistry(t, "-url", srv.URL, "-prefix", "shop", "-no-cart")
	require.Equal(t, 0, code)
	assert.Contains(t, reg.subjects, "shop.commands-value")
	for s := range reg.subjects {
		assert.NotContains(t, s, "cart", "subject %s with -no-cart", s)
	}
}

// TestRegisterRejected: a registry error fails the command, naming the file.
func TestRegisterRejected(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte(`{"error_code":409,"message":"incompatible schema"}`))
	}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-dir", "../../schemas/json", "-url", srv.URL}, &stdout, &stderr,
		func(string) string { return "" })
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "409 Conflict")
	assert.Contains(t, stderr.String(), "incompatible schema")
}
