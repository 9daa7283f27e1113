package deploycheck

import (
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		var names []string
		for k := range w.env {
			if strings.HasPrefix(k, "RESERVATIONS_") {
				names = append(names, k)
			}
		}
		sort.Strings(names)
		for _, k := range names {
			if !known[k] {
				t.Errorf("%s: %s is not a setting of `reservations %s` (see `reservations config-table`)", w.where, k, w.sub)
			}
		}
	}
}
