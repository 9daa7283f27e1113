// Package deploycheck tests the deploy/ folder, which holds no Go: the compose
// file, the Dockerfile, the Kubernetes manifests, the Prometheus configuration
// and rules and the Grafana provisioning and dashboard. No Docker engine or
// Kubernetes cluster is needed: the tests parse every file, check that the
// files reference each other and the binary consistently, and check every
// metric a rule or panel uses against the /metrics of the real binary.
//
// The package has test files only.
package deploycheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/reservations/reservations/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	removeBinary()
	os.Exit(code)
}

// repoRoot is the module root (the folder of go.mod).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, parent, dir, "go.mod not found above %s", file)
		dir = parent
	}
}

// deployDir is <repo>/deploy.
func deployDir(t testing.TB) string { return filepath.Join(repoRoot(t), "deploy") }

// deployFiles lists the files under deploy/, relative to it, with "/".
func deployFiles(t testing.TB) []string {
	t.Helper()
	root := deployDir(t)
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, path)
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	require.NoError(t, err)
	sort.Strings(files)
	return files
}

// readDeploy reads deploy/<rel>.
func readDeploy(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir(t), filepath.FromSlash(rel)))
	require.NoError(t, err)
	return b
}

// yamlDocs decodes every document of a YAML stream into a generic value.
func yamlDocs(data []byte) ([]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []any
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// decodeYAML decodes the single document of deploy/<rel> into v.
func decodeYAML(t testing.TB, rel string, v any) {
	t.Helper()
	require.NoError(t, yaml.Unmarshal(readDeploy(t, rel), v), rel)
}

// TestFilesParse parses every YAML and JSON file under deploy/ and checks
// that deploy/ holds no Go (house style: deploy/ is configuration only).
func TestFilesParse(t *testing.T) {
	files := deployFiles(t)
	require.NotEmpty(t, files)
	var yamls, jsons int
	for _, rel := range files {
		switch filepath.Ext(rel) {
		case ".yaml", ".yml":
			yamls++
			docs, err := yamlDocs(readDeploy(t, rel))
			if assert.NoError(t, err, "invalid YAML: deploy/%s", rel) {
				assert.NotEmpty(t, docs, "empty YAML: deploy/%s", rel)
			}
			for i, d := range docs {
				_, isMap := d.(map[string]any)
				assert.True(t, isMap, "deploy/%s document %d is not a mapping", rel, i)
			}
		case ".json":
			jsons++
			var v any
			dec := json.NewDecoder(bytes.NewReader(readDeploy(t, rel)))
			assert.NoError(t, dec.Decode(&v), "invalid JSON: deploy/%s", rel)
			assert.False(t, dec.More(), "trailing data after the JSON value: deploy/%s", rel)
		case ".go":
			t.Errorf("deploy/%s: deploy/ holds no Go (tests live in internal/deploycheck)", rel)
		}
	}
	assert.GreaterOrEqual(t, yamls, 10, "YAML files under deploy/")
	assert.GreaterOrEqual(t, jsons, 1, "JSON files under deploy/")
}

// TestReadmeExplainsEveryFile: deploy/README.md names every file of deploy/.
func TestReadmeExplainsEveryFile(t *testing.T) {
	readme := string(readDeploy(t, "README.md"))
	for _, rel := range deployFiles(t) {
		if rel == "README.md" {
			continue
		}
		assert.Contains(t, readme, rel, "deploy/README.md does not explain deploy/%s", rel)
	}
	for _, cmd := range []string{
		"docker compose -f deploy/compose.yaml up --build",
		"kubectl apply -k deploy/k8s",
		"docker build -f deploy/Dockerfile",
	} {
		assert.Contains(t, readme, cmd)
	}
}

// headingAnchors returns the GitHub anchors of the Markdown headings in md.
func headingAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		h = strings.ToLower(drop.ReplaceAllString(h, ""))
		anchors[strings.ReplaceAll(h, " ", "-")] = true
	}
	return anchors
}
