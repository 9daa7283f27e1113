package deploycheck

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/topics"
)

const kafkaDoc = "docs/KAFKA_OPERATIONS.md"

func readRepo(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	require.NoError(t, err)
	return string(b)
}

// settingDefaults returns the defaults `reservations config-table` prints for
// the settings of subcommand sub, by environment variable.
func settingDefaults(t testing.TB, sub string) map[string]string {
	t.Helper()
	cmd := exec.Command(reservationsBinary(t), "config-table")
	cmd.Env = cleanEnv()
	out, err := cmd.Output()
	require.NoError(t, err, "reservations config-table")
	row := regexp.MustCompile("^\\| `--[a-z0-9-]+` \\| `(RESERVATIONS_[A-Z0-9_]+)` \\| `([^`]*)` \\|")
	defaults := map[string]string{}
	in := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := tableHeading.FindStringSubmatch(line); m != nil {
			in = m[1] == sub
			continue
		}
		if m := row.FindStringSubmatch(line); m != nil && in {
			defaults[m[1]] = m[2]
		}
	}
	require.NotEmpty(t, defaults, "config-table: no settings with defaults for %s", sub)
	return defaults
}

// TestReadmeTopics: the compose section of deploy/README.md names every
// topic the topics service creates (the topics package's names).
func TestReadmeTopics(t *testing.T) {
	readme := string(readDeploy(t, "README.md"))
	row := regexp.MustCompile("(?m)^\\| `topics` \\|.*$").FindString(readme)
	require.NotEmpty(t, row, "deploy/README.md: no row for the compose service topics")
	names := topics.NewNames(topics.DefaultPrefix)
	for _, n := range names.All() {
		assert.Contains(t, row, "`"+n+"`", "deploy/README.md: the topics service creates %s", n)
	}
	assert.NotContains(t, readme, "until then it ignores them", "the Kafka TLS and SASL settings are flags of the binary")
}

// TestKafkaOperationsDoc checks docs/KAFKA_OPERATIONS.md against the code and
// the manifests: it names every topic, the groups and transactional id
// prefixes of the processor and the cart coordinator as deployed, the
// recommended topic settings, and its ACL table lets only the processor and
// the cart service write cart-commands.
func TestKafkaOperationsDoc(t *testing.T) {
	doc := readRepo(t, kafkaDoc)
	names := topics.NewNames(topics.DefaultPrefix)
	for _, n := range names.All() {
		assert.Contains(t, doc, "`"+n+"`", "%s does not name topic %s", kafkaDoc, n)
	}

	// The groups the deployment uses: the ConfigMap's, else the binary's
	// defaults.
	defaults := settingDefaults(t, "serve")
	cm := loadManifests(t).configData(t, "ConfigMap", "reservations-processor")
	group := func(env string) string {
		if v := cm[env]; v != "" {
			return v
		}
		return defaults[env]
	}
	for _, env := range []string{"RESERVATIONS_GROUP", "RESERVATIONS_CART_GROUP"} {
		g := group(env)
		require.NotEmpty(t, g, env)
		assert.Contains(t, doc, "group `"+g+"`", "%s: ACLs of the consumer group %s (%s)", kafkaDoc, g, env)
		assert.Contains(t, doc, "`"+g+"-`", "%s: the transactional id prefix of %s (%s): the id is <group>-<instance id>", kafkaDoc, g, env)
	}
	assert.Contains(t, doc, "`<group>-<instance id>`", "%s: how transactional ids are made", kafkaDoc)

	for _, s := range []string{"min.insync.replicas=2", "--replication-factor 3", "cleanup.policy=compact",
		"delete.retention.ms", "MirrorMaker 2", "read_committed", "DescribeConfigs"} {
		assert.Contains(t, doc, s, "%s: recommended settings / backup", kafkaDoc)
	}

	// The ACL table: rows | principal | resource | operations |, the
	// principal carried over from the row above when empty.
	writers := map[string]bool{}
	principal := ""
	in := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(line[3:]) == "ACLs"
			continue
		}
		if !in || !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 {
			continue
		}
		if p := strings.TrimSpace(cells[0]); p != "" {
			principal = p
		}
		if strings.Contains(cells[1], "`"+names.CartCommands+"`") && regexp.MustCompile(`\bWrite\b`).MatchString(cells[2]) {
			writers[principal] = true
		}
	}
	require.NotEmpty(t, writers, "%s: the ACL table grants nobody Write on %s", kafkaDoc, names.CartCommands)
	for p := range writers {
		assert.True(t, strings.HasPrefix(p, "processor") || strings.HasPrefix(p, "cart service"),
			"%s: %q may write %s: only the cart service and the processor may", kafkaDoc, p, names.CartCommands)
	}
	assert.Len(t, writers, 2, "the processor and the cart service write %s: %v", names.CartCommands, writers)
}

// TestSizingDoc: deploy/README.md states the GOMEMLIMIT values the manifests
// set and that a full restore holds a partition's live state in memory.
func TestSizingDoc(t *testing.T) {
	readme := string(readDeploy(t, "README.md"))
	m := loadManifests(t)
	for _, kind := range []string{"StatefulSet", "Deployment"} {
		var spec struct {
			Spec struct {
				Template podTemplate `yaml:"template"`
			} `yaml:"spec"`
		}
		as(t, m.ofKind(kind)[0].raw, &spec)
		for _, c := range spec.Spec.Template.Spec.Containers {
			v := m.env(t, c)["GOMEMLIMIT"]
			assert.Contains(t, readme, "`"+v+"`", "deploy/README.md does not state %s's GOMEMLIMIT %s", kind, v)
		}
	}
	assert.Contains(t, readme, "A full restore holds the partition's live state in memory")
}
