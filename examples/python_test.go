package examples_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// envPython names the Python interpreter that runs the example (default
// /usr/bin/python3, the one Debian's python3-confluent-kafka installs into;
// a python3 earlier on PATH, e.g. from pyenv, usually lacks the package).
const envPython = "RESERVATIONS_EXAMPLES_PYTHON"

// requirePython returns the interpreter, failing t (never skipping) when it
// cannot import confluent_kafka.
func requirePython(t *testing.T) string {
	t.Helper()
	python := os.Getenv(envPython)
	if python == "" {
		python = "/usr/bin/python3"
	}
	out, err := exec.Command(python, "-c", "import confluent_kafka; print(confluent_kafka.libversion()[0])").CombinedOutput()
	if err != nil {
		t.Fatalf("the Python example needs confluent-kafka for %s: install it with "+
			"`apt-get install python3-confluent-kafka` (Debian; .ci/run does), or point %s at a python3 "+
			"that has it (pip install confluent-kafka): %v\n%s", python, envPython, err, out)
	}
	t.Logf("%s: librdkafka %s", python, strings.TrimSpace(string(out)))
	return python
}

// TestPythonExample runs examples/python/reserve.py (confluent-kafka) against
// a processor: its commands must land on the SKU's murmur2 partition and their
// accepted results come back by command_id.
func TestPythonExample(t *testing.T) {
	python := requirePython(t)
	p := startPipeline(t)
	sku := skuForTest(t, "PY")
	out := runExample(t, "python", python, "reserve.py",
		"--bootstrap", strings.Join(p.brokers, ","),
		"--commands-topic", p.names.Commands, "--results-topic", p.names.Results,
		"--sku", sku, "--on-hand", "10", "--quantity", "3", "--timeout", "60")
	checkExchanges(t, out, sku, 10, 3)
}
