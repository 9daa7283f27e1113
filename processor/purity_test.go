package processor_test

import (
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The domain cores are pure: they import only the contract types and a few
// computation-only standard packages (no kgo, Badger, pgx, net, os, ...) and
// never read the clock (the caller passes now). The compiler keeps the import
// rule once this test names it; reading the clock is checked in the source.
func TestCoresArePure(t *testing.T) {
	allowed := []string{"fmt", "math", "sort", "slices", "strings", "time", "errors", "strconv",
		"crypto/sha256", "encoding/hex", "github.com/reservations/reservations/schemas"}
	for _, dir := range []string{"sku", "cart"} {
		pkg, err := build.ImportDir(dir, 0)
		require.NoError(t, err, dir)
		for _, imp := range pkg.Imports {
			assert.True(t, slices.Contains(allowed, imp), "processor/%s imports %s: the core must stay free of I/O", dir, imp)
		}
		fset := token.NewFileSet()
		for _, f := range pkg.GoFiles {
			file, err := parser.ParseFile(fset, filepath.Join(dir, f), nil, 0)
			require.NoError(t, err)
			ast.Inspect(file, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "time" && slices.Contains([]string{"Now", "Since", "Until", "Sleep", "After", "Tick", "NewTimer", "NewTicker"}, sel.Sel.Name) {
					t.Errorf("%s: processor/%s reads the clock (time.%s): pass now in", fset.Position(sel.Pos()), dir, sel.Sel.Name)
				}
				return true
			})
		}
		assert.False(t, strings.Contains(strings.Join(pkg.Imports, " "), "franz-go"), dir)
	}
}
