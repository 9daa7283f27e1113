package deploycheck

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// update rewrites generated files (the PrometheusRule) instead of checking
// them: go test ./internal/deploycheck -run TestPrometheusOperatorRule -update
var update = flag.Bool("update", false, "rewrite generated files under deploy/ from their sources")

const (
	operatorDir       = "k8s/prometheus-operator"
	operatorRuleFile  = operatorDir + "/prometheusrule.yaml"
	operatorRuleName  = "reservations"
	operatorRuleNotes = `# Generated from deploy/prometheus/rules.yml: do not edit. Regenerate with
#   go test ./internal/deploycheck -run TestPrometheusOperatorRule -update
# internal/deploycheck fails when spec.groups differs from the groups of
# rules.yml. Your Prometheus selects PrometheusRules by label and namespace
# (ruleSelector, ruleNamespaceSelector): see kustomization.yaml here.
`
)

// generatedPrometheusRule renders the PrometheusRule whose spec.groups are the
// groups of deploy/prometheus/rules.yml, node for node (comments, block
// styles and order kept).
func generatedPrometheusRule(t testing.TB) []byte {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(readDeploy(t, rulesFile), &doc))
	require.Equal(t, yaml.DocumentNode, doc.Kind)
	root := doc.Content[0]
	var groups *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "groups" {
			groups = root.Content[i+1]
		}
	}
	require.NotNil(t, groups, "%s: no groups", rulesFile)

	str := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }
	mapping := func(kv ...*yaml.Node) *yaml.Node {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: kv}
	}
	out := mapping(
		str("apiVersion"), str("monitoring.coreos.com/v1"),
		str("kind"), str("PrometheusRule"),
		str("metadata"), mapping(
			str("name"), str(operatorRuleName),
			str("labels"), mapping(str("app.kubernetes.io/name"), str("reservations")),
		),
		str("spec"), mapping(str("groups"), groups),
	)
	var b bytes.Buffer
	b.WriteString(operatorRuleNotes)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	require.NoError(t, enc.Encode(out))
	require.NoError(t, enc.Close())
	return b.Bytes()
}

// TestPrometheusOperatorRule: the PrometheusRule of the Prometheus Operator
// overlay holds exactly the groups of deploy/prometheus/rules.yml (compared
// as data), so that the two never drift. -update regenerates it.
func TestPrometheusOperatorRule(t *testing.T) {
	gen := generatedPrometheusRule(t)
	path := filepath.Join(deployDir(t), filepath.FromSlash(operatorRuleFile))
	if *update {
		require.NoError(t, os.WriteFile(path, gen, 0o644))
		t.Logf("wrote deploy/%s", operatorRuleFile)
	}
	var rules, want, got map[string]any
	decodeYAML(t, rulesFile, &rules)
	require.NoError(t, yaml.Unmarshal(gen, &want))
	decodeYAML(t, operatorRuleFile, &got)

	assert.Equal(t, "monitoring.coreos.com/v1", got["apiVersion"])
	assert.Equal(t, "PrometheusRule", got["kind"])
	spec, _ := got["spec"].(map[string]any)
	require.NotNil(t, spec, "%s: spec", operatorRuleFile)
	assert.Equal(t, rules["groups"], spec["groups"],
		"deploy/%s differs from deploy/%s: regenerate it with go test ./internal/deploycheck -run TestPrometheusOperatorRule -update",
		operatorRuleFile, rulesFile)
	assert.Equal(t, want, got, "deploy/%s is not what -update generates", operatorRuleFile)
}

type podMonitor struct {
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Selector            labelSelector `yaml:"selector"`
		NamespaceSelector   any           `yaml:"namespaceSelector"`
		PodMetricsEndpoints []struct {
			Port        string `yaml:"port"`
			Path        string `yaml:"path"`
			Relabelings []struct {
				Action       string   `yaml:"action"`
				SourceLabels []string `yaml:"sourceLabels"`
				TargetLabel  string   `yaml:"targetLabel"`
				Replacement  string   `yaml:"replacement"`
			} `yaml:"relabelings"`
		} `yaml:"podMetricsEndpoints"`
	} `yaml:"spec"`
}

// TestPodMonitors: the overlay's PodMonitors scrape the admin port of the
// processor pods and of the sink pods, each as the job that compose's
// Prometheus gives it (the rules and the dashboard select these jobs), and
// the overlay's kustomization lists its files.
func TestPodMonitors(t *testing.T) {
	m := loadManifests(t)
	pods := adminPods(t, m)

	overlay := loadOverlay(t, operatorDir)
	jobs := composeScrapeJobs(t)
	covered := map[string]bool{}
	for _, o := range overlay.ofKind("PodMonitor") {
		assert.Equal(t, "monitoring.coreos.com/v1", o.APIVersion)
		var pm podMonitor
		as(t, o.raw, &pm)
		var matched []string
		for name, tmpl := range pods {
			if subset(pm.Spec.Selector.MatchLabels, tmpl.Metadata.Labels) {
				matched = append(matched, name)
			}
		}
		if !assert.Len(t, matched, 1, "PodMonitor %s selects %v: want the pods of one workload", o.Metadata.Name, matched) {
			continue
		}
		what := matched[0]
		covered[what] = true
		assert.Nil(t, pm.Spec.NamespaceSelector, "PodMonitor %s: the pods are in its own namespace", o.Metadata.Name)
		require.Len(t, pm.Spec.PodMetricsEndpoints, 1, "PodMonitor %s", o.Metadata.Name)
		ep := pm.Spec.PodMetricsEndpoints[0]
		ports := map[string]bool{}
		for _, c := range pods[what].Spec.Containers {
			for _, p := range c.Ports {
				ports[p.Name] = true
			}
		}
		assert.True(t, ports[ep.Port], "PodMonitor %s: port %q is not a port of the %s pods", o.Metadata.Name, ep.Port, what)
		assert.Equal(t, "/metrics", ep.Path, "PodMonitor %s: path", o.Metadata.Name)
		job := ""
		for _, r := range ep.Relabelings {
			if r.TargetLabel == "job" && (r.Action == "" || r.Action == "replace") && len(r.SourceLabels) == 0 {
				job = r.Replacement
			}
		}
		assert.Equal(t, what, jobs[job], "PodMonitor %s sets job %q; compose's Prometheus scrapes the %s as %v", o.Metadata.Name, job, what, jobs)
	}
	assert.True(t, covered["processor"], "no PodMonitor for the processor")
	assert.True(t, covered["sink"], "no PodMonitor for the sink")
	assert.Len(t, overlay.ofKind("PrometheusRule"), 1)
}

// overlay is a kustomization directory under deploy/k8s applied on its own.
type overlay struct {
	dir     string
	kust    kustomization
	objects []k8sObject
}

func (o overlay) ofKind(kind string) []k8sObject {
	var out []k8sObject
	for _, x := range o.objects {
		if x.Kind == kind {
			out = append(out, x)
		}
	}
	return out
}

// loadOverlay reads the kustomization of deploy/<dir> and its resources. An
// overlay stands alone: it lists exactly the YAML files of its folder, none
// outside it (kustomize refuses a folder that includes its parent, and
// deploy/k8s must not include it either), and sets the namespace of
// deploy/k8s.
func loadOverlay(t testing.TB, dir string) overlay {
	t.Helper()
	o := overlay{dir: dir}
	decodeYAML(t, dir+"/kustomization.yaml", &o.kust)
	var base kustomization
	decodeYAML(t, "k8s/kustomization.yaml", &base)
	assert.Equal(t, base.Namespace, o.kust.Namespace, "%s: namespace", dir)
	var files []string
	for _, rel := range deployFiles(t) {
		if strings.HasPrefix(rel, dir+"/") && strings.HasSuffix(rel, ".yaml") && rel != dir+"/kustomization.yaml" {
			files = append(files, strings.TrimPrefix(rel, dir+"/"))
		}
	}
	assert.ElementsMatch(t, files, o.kust.Resources, "%s/kustomization.yaml resources vs its files", dir)
	for _, r := range o.kust.Resources {
		require.NotContains(t, r, "/", "%s: resource %s outside the folder", dir, r)
		docs, err := yamlDocs(readDeploy(t, dir+"/"+r))
		require.NoError(t, err, r)
		for _, d := range docs {
			raw, ok := d.(map[string]any)
			require.True(t, ok, r)
			var x k8sObject
			as(t, raw, &x)
			x.file, x.raw = r, raw
			o.objects = append(o.objects, x)
		}
	}
	return o
}
