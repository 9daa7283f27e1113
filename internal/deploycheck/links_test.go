package deploycheck

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// docFiles are the Markdown files whose links TestDocLinks checks: README.md
// and docs/*.md, as paths relative to the repository root.
func docFiles(t testing.TB, root string) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	require.NoError(t, err)
	files := []string{"README.md"}
	for _, d := range docs {
		files = append(files, "docs/"+filepath.Base(d))
	}
	return files
}

// TestDocLinks: every link in README.md and docs/*.md stays inside the
// repository's tree and resolves: the target file or folder exists and a
// #fragment names a heading of the Markdown file it points into.
func TestDocLinks(t *testing.T) {
	root := repoRoot(t)
	files := docFiles(t, root)
	assert.Greater(t, len(files), 5, "README.md and docs/*.md")
	links := 0
	for _, f := range files {
		n, problems, err := linkProblems(root, f)
		require.NoError(t, err)
		links += n
		for _, p := range problems {
			t.Error(p)
		}
	}
	assert.Greater(t, links, 50, "links checked")
}

// TestLinkProblems: the checker of TestDocLinks reports each kind of broken
// or outside link, and nothing for good ones.
func TestLinkProblems(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		p := filepath.Join(root, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	}
	write("docs/OTHER.md", "# Other doc\n\n## Flags and `env` (all)\n\n## Flags and `env` (all)\n")
	write("pkg/file.go", "package pkg\n")
	write("go.mod", "module x\n")
	for _, tc := range []struct {
		name string
		text string
		want string // substring of the one problem; empty: none
	}{
		{"sibling", "see [o](OTHER.md)", ""},
		{"heading", "see [o](OTHER.md#flags-and-env-all)", ""},
		{"duplicate heading", "see [o](OTHER.md#flags-and-env-all-1)", ""},
		{"own heading", "# Title here\n[t](#title-here)", ""},
		{"folder", "[p](../pkg)", ""},
		{"file with title", `[p](../pkg/file.go "the file")`, ""},
		{"image", "![c](OTHER.md)", ""},
		{"reference definition", "[x][r]\n\n[r]: ../go.mod", ""},
		{"in code span", "`[x](nope.md)` and `https://example.com`", ""},
		{"in fenced code", "```\n[x](nope.md) https://example.com\n```", ""},
		{"escaped", "[o](OTH%45R.md)", ""},
		{"missing file", "see [n](NOPE.md)", "NOPE.md: no such file"},
		{"missing heading", "see [o](OTHER.md#nope)", "no heading #nope"},
		{"missing own heading", "# Title\n[t](#other)", "no heading #other"},
		{"heading in code", "```\n# Fake\n```\n[t](#fake)", "no heading #fake"},
		{"fragment of a non-Markdown file", "[p](../pkg/file.go#L3x)", "#L3x"},
		{"outside the tree", "[up](../../elsewhere.md)", "outside the repository"},
		{"absolute path", "[abs](/etc/passwd)", "outside the repository"},
		{"url", "[web](https://example.com/x)", "outside the repository"},
		{"scheme-relative", "[web](//example.com/x)", "outside the repository"},
		{"mailto", "[m](mailto:a@b.c)", "outside the repository"},
		{"autolink", "<https://example.com>", "outside the repository"},
		{"bare url", "see https://example.com for more", "outside the repository"},
		{"broken reference definition", "[x][r]\n\n[r]: gone.md", "gone.md: no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write("docs/T.md", tc.text+"\n")
			_, problems, err := linkProblems(root, "docs/T.md")
			require.NoError(t, err)
			if tc.want == "" {
				assert.Empty(t, problems)
				return
			}
			require.Len(t, problems, 1, "%q", problems)
			assert.Contains(t, problems[0], tc.want)
		})
	}
}

var (
	fence        = regexp.MustCompile("^ {0,3}(```|~~~)")
	codeSpan     = regexp.MustCompile("(`+)")
	inlineLink   = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	refDef       = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?`)
	autolink     = regexp.MustCompile(`<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>`)
	bareURL      = regexp.MustCompile(`\b(?:https?|ftp)://[^\s)>\]]+|\bwww\.[a-z0-9-]+\.[a-z]`)
	scheme       = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	atxHeading   = regexp.MustCompile(`^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$`)
	htmlAnchor   = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	lineFragment = regexp.MustCompile(`^L\d+(?:-L\d+)?$`)
)

// proseLines returns the lines of md with those of fenced code blocks
// blanked and, when blankCode is set, the code spans of the others too.
func proseLines(md string, blankCode bool) (prose []string) {
	in := ""
	for _, line := range strings.Split(md, "\n") {
		if m := fence.FindStringSubmatch(line); m != nil {
			switch {
			case in == "":
				in = m[1]
			case in == m[1]:
				in = ""
			}
			prose = append(prose, "")
			continue
		}
		if in != "" {
			prose = append(prose, "")
			continue
		}
		if blankCode {
			line = blankCodeSpans(line)
		}
		prose = append(prose, line)
	}
	return prose
}

// blankCodeSpans replaces every code span of line (a run of n backticks up to
// the next run of exactly n) with nothing, keeping the rest.
func blankCodeSpans(line string) string {
	var b strings.Builder
	for {
		loc := codeSpan.FindStringIndex(line)
		if loc == nil {
			b.WriteString(line)
			return b.String()
		}
		b.WriteString(line[:loc[0]])
		ticks := line[loc[0]:loc[1]]
		rest := line[loc[1]:]
		end := -1
		for off := 0; ; {
			m := codeSpan.FindStringIndex(rest[off:])
			if m == nil {
				break
			}
			if m[1]-m[0] == len(ticks) {
				end = off + m[1]
				break
			}
			off += m[1]
		}
		if end < 0 { // no closing run: the backticks are literal
			b.WriteString(ticks)
			line = rest
			continue
		}
		line = rest[end:]
	}
}

// markdownAnchors returns the anchors GitHub gives the headings of md
// (outside code; repeated headings get -1, -2, ...) and its HTML anchors.
func markdownAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	linkText := regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
	for _, line := range proseLines(md, false) {
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		m := atxHeading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		h := linkText.ReplaceAllString(m[1], "$1")
		a := strings.ReplaceAll(strings.ToLower(drop.ReplaceAllString(h, "")), " ", "-")
		if n := seen[a]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			anchors[a] = true
		}
		seen[a]++
	}
	return anchors
}

// linkProblems checks every link of the Markdown file rel (relative to root,
// slash-separated): it returns how many links it checked and one message per
// link that leaves the repository's tree or does not resolve.
func linkProblems(root, rel string) (int, []string, error) {
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		return 0, nil, fmt.Errorf("read %s: %w", rel, err)
	}
	var problems []string
	links := 0
	for i, line := range proseLines(string(b), true) {
		at := fmt.Sprintf("%s:%d", rel, i+1)
		var targets []string
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			targets = append(targets, m[1])
		}
		if m := refDef.FindStringSubmatch(line); m != nil {
			targets = append(targets, m[1])
		}
		rest := inlineLink.ReplaceAllString(line, "")
		for _, m := range autolink.FindAllStringSubmatch(rest, -1) {
			targets = append(targets, m[1])
		}
		rest = autolink.ReplaceAllString(rest, "")
		for _, u := range bareURL.FindAllString(rest, -1) {
			problems = append(problems, fmt.Sprintf("%s: %s links outside the repository (bare URL)", at, u))
		}
		for _, target := range targets {
			links++
			if p := linkProblem(root, rel, target); p != "" {
				problems = append(problems, at+": "+p)
			}
		}
	}
	return links, problems, nil
}

// linkProblem checks one link target of the Markdown file rel.
func linkProblem(root, rel, target string) string {
	if strings.HasPrefix(target, "/") || scheme.MatchString(target) {
		return fmt.Sprintf("%s links outside the repository", target)
	}
	p, frag, _ := strings.Cut(target, "#")
	p, err := url.PathUnescape(p)
	if err != nil {
		return fmt.Sprintf("%s: %v", target, err)
	}
	dest := rel
	if p != "" {
		dest = path.Join(path.Dir(rel), p)
		if dest == ".." || strings.HasPrefix(dest, "../") {
			return fmt.Sprintf("%s links outside the repository", target)
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(dest))); err != nil {
			return fmt.Sprintf("%s: no such file (%s)", target, dest)
		}
	}
	if frag == "" {
		return ""
	}
	if !strings.HasSuffix(dest, ".md") {
		if lineFragment.MatchString(frag) {
			return ""
		}
		return fmt.Sprintf("%s: #%s is no line of %s", target, frag, dest)
	}
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(dest)))
	if err != nil {
		return fmt.Sprintf("%s: %v", target, err)
	}
	if !markdownAnchors(string(b))[frag] {
		return fmt.Sprintf("%s: %s has no heading #%s", target, dest, frag)
	}
	return ""
}

// TestReadmeNamesEveryPackage: the package map of README.md names every Go
// package of the module and every top-level folder that holds documentation,
// so that a newcomer finds each one.
func TestReadmeNamesEveryPackage(t *testing.T) {
	root := repoRoot(t)
	readme := readRepo(t, "README.md")
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		dir, err := filepath.Rel(root, filepath.Dir(p))
		if err != nil {
			return err
		}
		dir = filepath.ToSlash(dir)
		top := !strings.Contains(dir, "/") && dir != "."
		if strings.HasSuffix(p, ".go") || (top && strings.HasSuffix(p, ".md")) {
			if dir != "." && !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		}
		return nil
	})
	require.NoError(t, err)
	for _, want := range []string{"processor", "processor/sku", "processor/cart", "statestore", "internal/soak", "docs", "deploy"} {
		require.Contains(t, dirs, want, "the walk found no %s", want)
	}
	for _, dir := range dirs {
		named := strings.Contains(readme, "`"+dir+"`") || strings.Contains(readme, "`"+dir+"/`")
		assert.True(t, named, "README.md does not name %s (write it as `%s` or `%s/`)", dir, dir, dir)
	}
}
