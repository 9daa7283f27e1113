//go:build examples_node

package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The Node example needs Node.js and kafkajs from the npm registry, so it is
// not part of `make test`: `make examples` runs `npm ci` in examples/node and
// then this test (build tag examples_node).

// requireNode returns the node command, failing t (never skipping) when node
// or examples/node/node_modules/kafkajs is missing.
func requireNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("the Node example needs Node.js >= 18 on PATH (Debian: apt-get install nodejs npm): %v", err)
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "kafkajs", "package.json")); err != nil {
		t.Fatalf("the Node example needs kafkajs: run `npm ci` in examples/node (make examples does): %v", err)
	}
	out, err := exec.Command(node, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", node, err, out)
	}
	t.Logf("%s %s", node, strings.TrimSpace(string(out)))
	return node
}

// TestNodeExample runs examples/node/reserve.js (kafkajs) against a
// processor: its commands must land on the SKU's murmur2 partition and their
// accepted results come back by command_id.
func TestNodeExample(t *testing.T) {
	node := requireNode(t)
	p := startPipeline(t)
	sku := skuForTest(t, "JS")
	out := runExample(t, "node", node, "reserve.js",
		"--bootstrap", strings.Join(p.brokers, ","),
		"--commands-topic", p.names.Commands, "--results-topic", p.names.Results,
		"--sku", sku, "--on-hand", "7", "--quantity", "2", "--timeout", "60")
	checkExchanges(t, out, sku, 7, 2)
}
