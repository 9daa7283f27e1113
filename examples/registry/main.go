// Command registry registers the per-topic JSON Schemas of schemas/json with a
// Confluent-compatible schema registry (Confluent Schema Registry, Redpanda,
// Karapace, Apicurio's ccompat API), with the references the $refs need:
//
//	go run ./examples/registry -url http://localhost:8081
//
// Every file a topic schema reaches through $ref is registered first, under the
// subject <prefix>.<file without .schema.json> (e.g. reservations.command.reserve),
// with references for its own $refs; then each topic schema under
// <prefix>.<topic>-value (TopicNameStrategy). A reference's name is the
// referenced file's $id: the $refs are relative, and resolve against the
// referring file's $id to exactly that URL. Registering unchanged files again
// creates no new versions. SCHEMA_REGISTRY_BASIC_AUTH=key:secret sets basic
// authentication. docs/EXAMPLES.md explains what registering does and does not
// do for this pipeline (the processor reads plain JSON, not the registry's
// framed wire format).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// topics are the topics with a value schema, as in topic.<topic>.schema.json.
var topics = []string{"commands", "results", "changelog", "cart-commands", "cart-results"}

const contentType = "application/vnd.schemaregistry.v1+json"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	registryURL := fs.String("url", "http://localhost:8081", "schema registry base URL")
	dir := fs.String("dir", "schemas/json", "folder of the schema files")
	prefix := fs.String("prefix", "reservations", "topic prefix (also the prefix of the referenced schemas' subjects)")
	noCart := fs.Bool("no-cart", false, "leave out the cart topics (cart-commands, cart-results)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	files, err := load(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "registry: %v\n", err)
		return 1
	}
	r := &registrar{base: strings.TrimSuffix(*registryURL, "/"), files: files, prefix: *prefix, out: stdout,
		auth: getenv("SCHEMA_REGISTRY_BASIC_AUTH"), client: &http.Client{Timeout: 30 * time.Second},
		done: map[string]reference{}}
	for _, topic := range topics {
		if *noCart && strings.HasPrefix(topic, "cart-") {
			continue
		}
		subject := fmt.Sprintf("%s.%s-value", *prefix, topic)
		if _, err := r.register(ctx, "topic."+topic+".schema.json", subject, nil); err != nil {
			fmt.Fprintf(stderr, "registry: %v\n", err)
			return 1
		}
	}
	return 0
}

// schemaFile is one file of the schema folder.
type schemaFile struct {
	id   string   // its $id
	text string   // the file as it is
	refs []string // the files its $refs name, sorted, without repeats
}

// load reads every *.schema.json of dir.
func load(dir string) (map[string]schemaFile, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.schema.json"))
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no *.schema.json in %s (run from the repository root, or pass -dir)", dir)
	}
	files := map[string]schemaFile{}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		id, _ := doc.(map[string]any)["$id"].(string)
		if id == "" {
			return nil, fmt.Errorf("%s: no $id", name)
		}
		var refs []string
		collectRefs(doc, func(ref string) {
			if file, _, _ := strings.Cut(ref, "#"); file != "" && !slices.Contains(refs, file) {
				refs = append(refs, file)
			}
		})
		slices.Sort(refs)
		files[filepath.Base(name)] = schemaFile{id: id, text: string(b), refs: refs}
	}
	return files, nil
}

// collectRefs calls fn with every $ref value in node.
func collectRefs(node any, fn func(string)) {
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			if s, ok := v.(string); ok && k == "$ref" {
				fn(s)
			} else {
				collectRefs(v, fn)
			}
		}
	case []any:
		for _, v := range n {
			collectRefs(v, fn)
		}
	}
}

// reference is a schema reference of the registry API.
type reference struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

type registrar struct {
	base, prefix, auth string
	files              map[string]schemaFile
	client             *http.Client
	out                io.Writer
	done               map[string]reference // by file name
}

// register registers file under subject, after the files it references
// (path: the files being registered above it, to report a cycle).
func (r *registrar) register(ctx context.Context, file, subject string, path []string) (reference, error) {
	if ref, ok := r.done[file]; ok {
		return ref, nil
	}
	if slices.Contains(path, file) {
		return reference{}, fmt.Errorf("$ref cycle: %s -> %s", strings.Join(path, " -> "), file)
	}
	f, ok := r.files[file]
	if !ok {
		return reference{}, fmt.Errorf("%s: no such schema file (named by %s)", file, strings.Join(path, " -> "))
	}
	refs := []reference{}
	for _, dep := range f.refs {
		ref, err := r.register(ctx, dep, r.prefix+"."+strings.TrimSuffix(dep, ".schema.json"), append(path, file))
		if err != nil {
			return reference{}, err
		}
		refs = append(refs, ref)
	}
	body, err := json.Marshal(map[string]any{"schemaType": "JSON", "schema": f.text, "references": refs})
	if err != nil {
		return reference{}, err
	}
	var registered struct {
		ID int `json:"id"`
	}
	if err := r.post(ctx, "/subjects/"+url.PathEscape(subject)+"/versions", body, &registered); err != nil {
		return reference{}, fmt.Errorf("register %s as %s: %w", file, subject, err)
	}
	// The version of that schema in the subject (a schema registered before
	// keeps its version).
	var found struct {
		Version int `json:"version"`
	}
	if err := r.post(ctx, "/subjects/"+url.PathEscape(subject), body, &found); err != nil {
		return reference{}, fmt.Errorf("look up %s in %s: %w", file, subject, err)
	}
	fmt.Fprintf(r.out, "%s: subject %s version %d (id %d), %d references\n", file, subject, found.Version, registered.ID, len(refs))
	ref := reference{Name: f.id, Subject: subject, Version: found.Version}
	r.done[file] = ref
	return ref, nil
}

// post sends a registry API request and decodes its JSON answer into out.
func (r *registrar) post(ctx context.Context, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", contentType)
	if user, pass, ok := strings.Cut(r.auth, ":"); ok {
		req.SetBasicAuth(user, pass)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return errors.Join(fmt.Errorf("%s: answer is not the expected JSON", path), err)
	}
	return nil
}
