// Package scenario runs data-driven scenario files, the repository's format
// for table tests of the pure cores (processor and processor/cart): blocks of
// a directive line, its input lines, "----", and the expected output, ended by
// a blank line. Blank lines and lines starting with '#' between blocks are
// kept as they are.
package scenario

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Directive runs one directive with its input lines and returns its output.
type Directive func(directive string, input []string) []string

// RunDir runs every testdata file matching glob as a subtest; newRun returns
// the directive runner of one file (its fresh state).
func RunDir(t *testing.T, glob string, rewrite bool, newRun func(t *testing.T) Directive) {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files %s (%v)", glob, err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { Run(t, f, rewrite, newRun(t)) })
	}
}

// Run runs the blocks of file in order and reports every block whose output
// differs from the expected one. With rewrite, it writes the actual outputs
// back into file instead (only when no block failed otherwise).
func Run(t *testing.T, file string, rewrite bool, run Directive) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	lines := strings.Split(string(raw), "\n")
	failed := false
	for i := 0; i < len(lines); {
		line := lines[i]
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			i++
			continue
		}
		start := i + 1
		var input []string
		j := i + 1
		for ; j < len(lines) && lines[j] != "----"; j++ {
			input = append(input, lines[j])
		}
		if j >= len(lines) {
			t.Fatalf("%s:%d: directive without ----", file, start)
		}
		k := j + 1
		var want []string
		for ; k < len(lines) && lines[k] != ""; k++ {
			want = append(want, lines[k])
		}
		got := run(line, input)
		out.WriteString(line + "\n")
		for _, in := range input {
			out.WriteString(in + "\n")
		}
		out.WriteString("----\n")
		for _, g := range got {
			out.WriteString(g + "\n")
		}
		if !rewrite && strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s:%d: %s\n--- want\n%s\n--- got\n%s", file, start, line, strings.Join(want, "\n"), strings.Join(got, "\n"))
			failed = true
		}
		i = k
	}
	if rewrite && !failed {
		if err := os.WriteFile(file, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
