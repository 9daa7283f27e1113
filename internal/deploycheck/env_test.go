package deploycheck

import (
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// proposedKafkaSecurity are the environment variables of the Kafka security
// flags proposed with internal/kafkaauth (--kafka-tls, ...). deploy/ sets
// them already; until the binary has them they are ignored by it (it reads
// only the variables of its own flags), which this test allows, and reports,
// as long as the binary has none of them. Once it has one, it must have all
// of them.
var proposedKafkaSecurity = setOf(
	"RESERVATIONS_KAFKA_TLS",
	"RESERVATIONS_KAFKA_CA_FILE",
	"RESERVATIONS_KAFKA_CERT_FILE",
	"RESERVATIONS_KAFKA_KEY_FILE",
	"RESERVATIONS_KAFKA_TLS_INSECURE_SKIP_VERIFY",
	"RESERVATIONS_KAFKA_SASL_MECHANISM",
	"RESERVATIONS_KAFKA_USER",
	"RESERVATIONS_KAFKA_PASSWORD",
)

// TestEnvVarsAreSettings checks every RESERVATIONS_ variable that the
// compose file and the Kubernetes manifests give the binary against the
// settings of the subcommand they run, as `reservations config-table` prints
// them: a misspelt variable would be silently ignored and the default used.
func TestEnvVarsAreSettings(t *testing.T) {
	table := configTable(t)
	type workload struct {
		where, sub string
		env        map[string]string
	}
	var loads []workload
	c := loadCompose(t)
	for _, name := range []string{"processor", "sink"} {
		s := c.Services[name]
		require.NotEmpty(t, s.Command, "compose %s: command", name)
		loads = append(loads, workload{"compose service " + name, s.Command[0], s.Environment})
	}
	m := loadManifests(t)
	var sts statefulSet
	as(t, m.ofKind("StatefulSet")[0].raw, &sts)
	var dep deployment
	as(t, m.ofKind("Deployment")[0].raw, &dep)
	for where, tmpl := range map[string]podTemplate{"StatefulSet": sts.Spec.Template, "sink Deployment": dep.Spec.Template} {
		for _, ct := range tmpl.Spec.Containers {
			require.NotEmpty(t, ct.Args, "%s: args", where)
			loads = append(loads, workload{"k8s " + where, ct.Args[0], m.env(t, ct)})
		}
	}

	for _, w := range loads {
		known := table[w.sub]
		if !assert.NotNil(t, known, "%s runs `reservations %s`, which the binary does not have", w.where, w.sub) {
			continue
		}
		securityWired := false
		for v := range proposedKafkaSecurity {
			securityWired = securityWired || known[v]
		}
		var names []string
		for k := range w.env {
			if strings.HasPrefix(k, "RESERVATIONS_") {
				names = append(names, k)
			}
		}
		sort.Strings(names)
		for _, k := range names {
			switch {
			case known[k]:
			case proposedKafkaSecurity[k] && !securityWired:
				t.Logf("%s: %s is a proposed Kafka security setting, not a flag of `reservations %s` yet (ignored by it)", w.where, k, w.sub)
			default:
				t.Errorf("%s: %s is not a setting of `reservations %s` (see `reservations config-table`)", w.where, k, w.sub)
			}
		}
	}
}
