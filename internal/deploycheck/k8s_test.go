package deploycheck

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// Minimal Kubernetes types: the fields the tests read.

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sObject struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	file       string
	raw        map[string]any
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type podTemplate struct {
	Metadata objectMeta `yaml:"metadata"`
	Spec     podSpec    `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    *int  `yaml:"runAsUser"`
		FSGroup      *int  `yaml:"fsGroup"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name string `yaml:"name"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Args    []string `yaml:"args"`
	Command []string `yaml:"command"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name     string `yaml:"name"`
			Optional bool   `yaml:"optional"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
			ResourceFieldRef *struct {
				ContainerName string `yaml:"containerName"`
				Resource      string `yaml:"resource"`
			} `yaml:"resourceFieldRef"`
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			ConfigMapKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	StartupProbe    *probe `yaml:"startupProbe"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // a port name or number
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
}

type statefulSet struct {
	Spec struct {
		ServiceName          string        `yaml:"serviceName"`
		Replicas             *int          `yaml:"replicas"`
		PodManagementPolicy  string        `yaml:"podManagementPolicy"`
		Selector             labelSelector `yaml:"selector"`
		Template             podTemplate   `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				AccessModes []string `yaml:"accessModes"`
				Resources   struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type deployment struct {
	Spec struct {
		Replicas *int          `yaml:"replicas"`
		Selector labelSelector `yaml:"selector"`
		Strategy struct {
			Type string `yaml:"type"`
		} `yaml:"strategy"`
		Template podTemplate `yaml:"template"`
	} `yaml:"spec"`
}

type service struct {
	Spec struct {
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	Spec struct {
		MaxUnavailable any           `yaml:"maxUnavailable"`
		MinAvailable   any           `yaml:"minAvailable"`
		Selector       labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type kustomization struct {
	Namespace string   `yaml:"namespace"`
	Resources []string `yaml:"resources"`
	Images    []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	} `yaml:"images"`
}

// manifests are the Kubernetes objects of deploy/k8s (kustomization aside;
// the folders below it are overlays applied on their own), and the Secrets
// that are provided out of band, as deploy/k8s/secrets-example generates
// them from its *.env.example files.
type manifests struct {
	objects  []k8sObject
	kust     kustomization
	provided []k8sObject
}

// baseManifest reports whether rel (relative to deploy/) is a manifest of
// deploy/k8s itself.
func baseManifest(rel string) bool {
	dir, file := path.Split(rel)
	return dir == "k8s/" && file != "kustomization.yaml" && path.Ext(file) == ".yaml"
}

func loadManifests(t testing.TB) manifests {
	t.Helper()
	var m manifests
	decodeYAML(t, "k8s/kustomization.yaml", &m.kust)
	m.provided = exampleSecrets(t)
	for _, rel := range deployFiles(t) {
		if !baseManifest(rel) {
			continue
		}
		docs, err := yamlDocs(readDeploy(t, rel))
		require.NoError(t, err, rel)
		for _, d := range docs {
			raw, ok := d.(map[string]any)
			require.True(t, ok, rel)
			var o k8sObject
			as(t, raw, &o)
			o.file, o.raw = strings.TrimPrefix(rel, "k8s/"), raw
			require.NotEmpty(t, o.APIVersion, "%s: apiVersion", rel)
			require.NotEmpty(t, o.Kind, "%s: kind", rel)
			require.NotEmpty(t, o.Metadata.Name, "%s: a %s without metadata.name", rel, o.Kind)
			m.objects = append(m.objects, o)
		}
	}
	return m
}

// as decodes a generic YAML value into a typed one.
func as(t testing.TB, raw any, v any) {
	t.Helper()
	b, err := yaml.Marshal(raw)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v))
}

// get returns the only object of kind and name, decoded into v: one of
// deploy/k8s, or a Secret provided out of band.
func (m manifests) get(t testing.TB, kind, name string, v any) k8sObject {
	t.Helper()
	for _, o := range append(append([]k8sObject(nil), m.objects...), m.provided...) {
		if o.Kind == kind && o.Metadata.Name == name {
			if v != nil {
				as(t, o.raw, v)
			}
			return o
		}
	}
	require.Failf(t, "missing object", "deploy/k8s has no %s %s", kind, name)
	return k8sObject{}
}

// ofKind returns the objects of kind.
func (m manifests) ofKind(kind string) []k8sObject {
	var out []k8sObject
	for _, o := range m.objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// configData returns the keys and values of a ConfigMap or Secret (data or
// stringData).
func (m manifests) configData(t testing.TB, kind, name string) map[string]string {
	t.Helper()
	var v struct {
		Data       map[string]string `yaml:"data"`
		StringData map[string]string `yaml:"stringData"`
	}
	m.get(t, kind, name, &v)
	out := map[string]string{}
	for k, x := range v.Data {
		out[k] = x
	}
	for k, x := range v.StringData {
		out[k] = x
	}
	return out
}

// env returns the environment a container sees: its ConfigMaps and Secrets
// (envFrom) and its env entries; values from the downward API or a key ref
// are "<from ...>".
func (m manifests) env(t testing.TB, c container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			for k, v := range m.configData(t, "ConfigMap", ef.ConfigMapRef.Name) {
				out[k] = v
			}
		case ef.SecretRef != nil:
			for k, v := range m.configData(t, "Secret", ef.SecretRef.Name) {
				out[k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			out[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			out[e.Name] = "<from " + e.ValueFrom.FieldRef.FieldPath + ">"
		case e.ValueFrom.ResourceFieldRef != nil:
			out[e.Name] = "<from " + e.ValueFrom.ResourceFieldRef.Resource + ">"
		case e.ValueFrom.SecretKeyRef != nil:
			out[e.Name] = m.configData(t, "Secret", e.ValueFrom.SecretKeyRef.Name)[e.ValueFrom.SecretKeyRef.Key]
		case e.ValueFrom.ConfigMapKeyRef != nil:
			out[e.Name] = m.configData(t, "ConfigMap", e.ValueFrom.ConfigMapKeyRef.Name)[e.ValueFrom.ConfigMapKeyRef.Key]
		}
	}
	return out
}

func subset(sub, of map[string]string) bool {
	if len(sub) == 0 {
		return false
	}
	for k, v := range sub {
		if of[k] != v {
			return false
		}
	}
	return true
}

// TestKustomization: the kustomization lists exactly the manifests of
// deploy/k8s (not the overlays in its folders), its namespace exists, it
// names the image the workloads use, and it creates no Secret: `kubectl apply
// -k deploy/k8s` must never replace real credentials with placeholders.
func TestKustomization(t *testing.T) {
	m := loadManifests(t)
	var files []string
	for _, rel := range deployFiles(t) {
		if baseManifest(rel) {
			files = append(files, strings.TrimPrefix(rel, "k8s/"))
		}
	}
	res := append([]string(nil), m.kust.Resources...)
	sort.Strings(res)
	assert.Equal(t, files, res, "kustomization.yaml resources vs the files of deploy/k8s")
	for _, r := range m.kust.Resources {
		assert.NotContains(t, r, "/", "deploy/k8s/kustomization.yaml includes %s: the folders are overlays applied on their own", r)
	}
	for _, o := range m.objects {
		assert.NotEqual(t, "Secret", o.Kind, "deploy/k8s/%s: the default kustomization applies Secret %s over the real one "+
			"(provide Secrets out of band, see deploy/k8s/secrets-example)", o.file, o.Metadata.Name)
	}
	if m.kust.Namespace != "" {
		m.get(t, "Namespace", m.kust.Namespace, nil)
	}
	var images []string
	for _, im := range m.kust.Images {
		images = append(images, im.Name)
		assert.NotEmpty(t, im.NewTag, "image %s: pin a tag", im.Name)
	}
	for _, kind := range []string{"StatefulSet", "Deployment"} {
		for _, o := range m.ofKind(kind) {
			var spec struct {
				Spec struct {
					Template podTemplate `yaml:"template"`
				} `yaml:"spec"`
			}
			as(t, o.raw, &spec)
			for _, c := range spec.Spec.Template.Spec.Containers {
				assert.Contains(t, images, c.Image, "%s %s: image %s is not set by the kustomization", kind, o.Metadata.Name, c.Image)
			}
		}
	}
}

// checkPod checks what every pod of the pipeline needs: one container
// running the given subcommand, probes on /healthz and /readyz at the admin
// port, requests and limits, non-root, references that resolve, scrape
// annotations on the admin port.
func checkPod(t *testing.T, m manifests, what, sub string, tmpl podTemplate) (container, map[string]string) {
	t.Helper()
	spec := tmpl.Spec
	require.Len(t, spec.Containers, 1, "%s: one container", what)
	c := spec.Containers[0]
	require.NotEmpty(t, c.Args, "%s: args", what)
	assert.Equal(t, sub, c.Args[0], "%s: subcommand", what)
	env := m.env(t, c)

	adminPort := portOf(t, env["RESERVATIONS_HTTP_ADDR"])
	assert.True(t, strings.HasPrefix(env["RESERVATIONS_HTTP_ADDR"], "0.0.0.0:"), "%s: admin listener on all interfaces (the kubelet probes the pod IP)", what)
	portNames := map[string]int{}
	for _, p := range c.Ports {
		portNames[p.Name] = p.ContainerPort
	}
	assert.Equal(t, adminPort, portNames["http"], "%s: container port http is RESERVATIONS_HTTP_ADDR's", what)

	probePort := func(p *probe) int {
		switch v := p.HTTPGet.Port.(type) {
		case string:
			return portNames[v]
		case int:
			return v
		}
		return -1
	}
	for name, pr := range map[string]struct {
		p    *probe
		path string
	}{"livenessProbe": {c.LivenessProbe, "/healthz"}, "readinessProbe": {c.ReadinessProbe, "/readyz"}} {
		if assert.NotNil(t, pr.p, "%s: %s", what, name) && assert.NotNil(t, pr.p.HTTPGet, "%s: %s httpGet", what, name) {
			assert.Equal(t, pr.path, pr.p.HTTPGet.Path, "%s: %s path", what, name)
			assert.Equal(t, adminPort, probePort(pr.p), "%s: %s port", what, name)
		}
	}
	if c.StartupProbe != nil && assert.NotNil(t, c.StartupProbe.HTTPGet) {
		assert.Equal(t, adminPort, probePort(c.StartupProbe), "%s: startupProbe port", what)
	}
	for _, r := range []string{"cpu", "memory"} {
		assert.NotEmpty(t, c.Resources.Requests[r], "%s: resources.requests.%s", what, r)
		assert.NotEmpty(t, c.Resources.Limits[r], "%s: resources.limits.%s", what, r)
	}
	if assert.NotNil(t, spec.SecurityContext.RunAsNonRoot, "%s: runAsNonRoot", what) {
		assert.True(t, *spec.SecurityContext.RunAsNonRoot, "%s: runAsNonRoot", what)
	}
	if assert.NotNil(t, spec.TerminationGracePeriodSeconds, "%s: terminationGracePeriodSeconds", what) {
		assert.GreaterOrEqual(t, *spec.TerminationGracePeriodSeconds, 30, "%s: time to stop at a transaction boundary", what)
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil {
			assert.Equal(t, c.Name, e.ValueFrom.ResourceFieldRef.ContainerName, "%s: env %s resourceFieldRef", what, e.Name)
		}
	}
	checkGoMemLimit(t, what, c, env)
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
	}
	for _, vm := range c.VolumeMounts {
		if vm.Name != "data" {
			assert.True(t, volumes[vm.Name], "%s: volumeMount %s has no volume", what, vm.Name)
		}
	}
	a := tmpl.Metadata.Annotations
	assert.Equal(t, "true", a["prometheus.io/scrape"], "%s: scrape annotation", what)
	assert.Equal(t, strconv.Itoa(adminPort), a["prometheus.io/port"], "%s: scrape port", what)
	assert.Equal(t, "/metrics", a["prometheus.io/path"], "%s: scrape path", what)
	return c, env
}

// TestStatefulSet checks the processor: a StatefulSet of `serve` pods with a
// PVC template mounted at /data holding RESERVATIONS_STATE_DIR, the pod name
// as RESERVATIONS_INSTANCE_ID (downward API), configuration from a
// ConfigMap and credentials from a Secret, probes (a startupProbe of at least
// ten minutes for restores), resources, a headless governing Service, a
// Service for metrics and queries, and a PodDisruptionBudget of one.
func TestStatefulSet(t *testing.T) {
	m := loadManifests(t)
	sets := m.ofKind("StatefulSet")
	require.Len(t, sets, 1)
	var sts statefulSet
	as(t, sets[0].raw, &sts)
	spec := sts.Spec
	podLabels := spec.Template.Metadata.Labels
	assert.True(t, subset(spec.Selector.MatchLabels, podLabels), "selector %v matches the pod labels %v", spec.Selector.MatchLabels, podLabels)

	c, env := checkPod(t, m, "StatefulSet", "serve", spec.Template)

	// Replicas: at most one per partition, or some replicas idle.
	if assert.NotNil(t, spec.Replicas) {
		parts, err := strconv.Atoi(env["RESERVATIONS_PARTITIONS"])
		require.NoError(t, err, "RESERVATIONS_PARTITIONS")
		assert.True(t, *spec.Replicas >= 1 && *spec.Replicas <= parts, "replicas %d <= partitions %d", *spec.Replicas, parts)
	}

	// One standby copy per partition on another pod (docs/STANDBY.md): a
	// failover replays only the changelog tail. A standby needs a pod that
	// does not own the partition.
	if standbys, err := strconv.Atoi(env["RESERVATIONS_STANDBY_REPLICAS"]); assert.NoError(t, err, "RESERVATIONS_STANDBY_REPLICAS") && spec.Replicas != nil {
		assert.Equal(t, 1, standbys, "RESERVATIONS_STANDBY_REPLICAS")
		assert.Less(t, standbys, *spec.Replicas, "standby replicas < pod replicas")
	}

	// Badger on the PVC.
	require.Len(t, spec.VolumeClaimTemplates, 1, "volumeClaimTemplates")
	pvc := spec.VolumeClaimTemplates[0]
	assert.Equal(t, []string{"ReadWriteOnce"}, pvc.Spec.AccessModes)
	assert.NotEmpty(t, pvc.Spec.Resources.Requests["storage"], "PVC storage request")
	var dataPath string
	for _, vm := range c.VolumeMounts {
		if vm.Name == pvc.Metadata.Name {
			dataPath = vm.MountPath
		}
	}
	assert.Equal(t, "/data", dataPath, "the PVC is mounted at /data")
	assert.True(t, strings.HasPrefix(env["RESERVATIONS_STATE_DIR"], dataPath+"/"), "RESERVATIONS_STATE_DIR %q is on the PVC", env["RESERVATIONS_STATE_DIR"])
	if assert.NotNil(t, spec.Template.Spec.SecurityContext.FSGroup, "fsGroup: the PVC is writable by the non-root user") {
		assert.Equal(t, spec.Template.Spec.SecurityContext.RunAsUser, spec.Template.Spec.SecurityContext.FSGroup)
	}

	// The stable pod name fences the pod's predecessor.
	assert.Equal(t, "<from metadata.name>", env["RESERVATIONS_INSTANCE_ID"], "RESERVATIONS_INSTANCE_ID from the downward API")

	// Redirects name the owner pod by its fully qualified name in the
	// governing Service, which resolves from every namespace:
	// <pod>.<service>.<namespace>.svc.<cluster domain>:<admin port>.
	checkAdvertisedAddr(t, c, spec.ServiceName, portOf(t, env["RESERVATIONS_HTTP_ADDR"]))

	// Configuration from a ConfigMap, credentials from a Secret.
	var cms, secrets int
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			cms++
		}
		if ef.SecretRef != nil {
			secrets++
		}
	}
	assert.Positive(t, cms, "envFrom a ConfigMap")
	assert.Positive(t, secrets, "envFrom a Secret")
	assert.NotEmpty(t, env["RESERVATIONS_BROKERS"])

	// Restores may take long: the startupProbe waits on /readyz for ten
	// minutes at least before liveness starts.
	if sp := c.StartupProbe; assert.NotNil(t, sp, "startupProbe") && assert.NotNil(t, sp.HTTPGet) {
		assert.Equal(t, "/readyz", sp.HTTPGet.Path)
		assert.GreaterOrEqual(t, sp.PeriodSeconds*sp.FailureThreshold, 600, "startupProbe period x failureThreshold")
	}

	// Governing headless Service and the normal one.
	var headless service
	m.get(t, "Service", spec.ServiceName, &headless)
	assert.Equal(t, "None", headless.Spec.ClusterIP, "serviceName %s is headless", spec.ServiceName)
	assert.True(t, headless.Spec.PublishNotReadyAddresses, "pod DNS names exist while a pod restores")
	assert.True(t, subset(headless.Spec.Selector, podLabels))
	var normal int
	for _, o := range m.ofKind("Service") {
		var s service
		as(t, o.raw, &s)
		if o.Metadata.Name == spec.ServiceName || !subset(s.Spec.Selector, podLabels) {
			continue
		}
		normal++
		assert.NotEqual(t, "None", s.Spec.ClusterIP)
		for _, p := range s.Spec.Ports {
			assert.Equal(t, "http", p.TargetPort, "Service %s targets the admin port", o.Metadata.Name)
		}
	}
	assert.Equal(t, 1, normal, "one normal Service for metrics and queries")

	// PodDisruptionBudget.
	pdbs := m.ofKind("PodDisruptionBudget")
	require.Len(t, pdbs, 1)
	var budget pdb
	as(t, pdbs[0].raw, &budget)
	assert.Equal(t, "policy/v1", pdbs[0].APIVersion)
	assert.Equal(t, 1, budget.Spec.MaxUnavailable, "PDB maxUnavailable")
	assert.Nil(t, budget.Spec.MinAvailable)
	assert.True(t, subset(budget.Spec.Selector.MatchLabels, podLabels), "the PDB selects the processor pods")
}

// TestSinkDeployment checks the sink: a Deployment of exactly one `sink` pod
// (Recreate: never two), its DSN from a Secret, probes and resources, and a
// selector that does not also select the processor.
func TestSinkDeployment(t *testing.T) {
	m := loadManifests(t)
	deps := m.ofKind("Deployment")
	require.Len(t, deps, 1)
	var d deployment
	as(t, deps[0].raw, &d)
	if assert.NotNil(t, d.Spec.Replicas) {
		assert.Equal(t, 1, *d.Spec.Replicas)
	}
	assert.Equal(t, "Recreate", d.Spec.Strategy.Type)
	assert.True(t, subset(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels))
	c, env := checkPod(t, m, "sink Deployment", "sink", d.Spec.Template)

	inSecret := false
	for _, ef := range c.EnvFrom {
		if ef.SecretRef != nil {
			_, ok := m.configData(t, "Secret", ef.SecretRef.Name)["RESERVATIONS_PG_DSN"]
			inSecret = inSecret || ok
		}
	}
	assert.True(t, inSecret, "RESERVATIONS_PG_DSN (it holds the password) comes from a Secret")
	assert.NotEmpty(t, env["RESERVATIONS_BROKERS"])

	var sts statefulSet
	as(t, m.ofKind("StatefulSet")[0].raw, &sts)
	assert.False(t, subset(d.Spec.Selector.MatchLabels, sts.Spec.Template.Metadata.Labels), "the sink selector must not match processor pods")
	assert.False(t, subset(sts.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels), "the processor selector must not match sink pods")
}

// TestSecretsAreSecret: no ConfigMap holds a password or DSN, so that
// credentials only ever come from Secrets.
func TestSecretsAreSecret(t *testing.T) {
	m := loadManifests(t)
	for _, o := range m.ofKind("ConfigMap") {
		for k := range m.configData(t, "ConfigMap", o.Metadata.Name) {
			lk := strings.ToLower(k)
			assert.False(t, strings.Contains(lk, "password") || strings.Contains(lk, "dsn") || strings.Contains(lk, "user"),
				"ConfigMap %s holds %s: put credentials in a Secret", o.Metadata.Name, k)
		}
	}
	for _, o := range m.ofKind("Secret") {
		assert.Equal(t, "Opaque", fmt.Sprint(o.raw["type"]), "Secret %s type", o.Metadata.Name)
	}
}

// checkAdvertisedAddr checks the processor's RESERVATIONS_ADVERTISED_ADDR:
// $(<pod name var>).<headless service>.$(<namespace var>).svc.<domain>:<port>,
// both variables from the downward API and defined before it (Kubernetes
// expands $(VAR) only for variables defined earlier in the list).
func checkAdvertisedAddr(t *testing.T, c container, headless string, adminPort int) {
	t.Helper()
	defined := map[string]string{} // variable -> its downward API field, of the entries before
	var addr string
	for _, e := range c.Env {
		if e.Name == "RESERVATIONS_ADVERTISED_ADDR" {
			addr = e.Value
			break
		}
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			defined[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	require.NotEmpty(t, addr, "StatefulSet: RESERVATIONS_ADVERTISED_ADDR")
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err, addr)
	assert.Equal(t, strconv.Itoa(adminPort), port, "advertised port is the admin port")
	re := regexp.MustCompile(`^\$\(([A-Z_][A-Z0-9_]*)\)\.` + regexp.QuoteMeta(headless) + `\.\$\(([A-Z_][A-Z0-9_]*)\)\.svc\.[a-z0-9-]+(\.[a-z0-9-]+)*$`)
	m := re.FindStringSubmatch(host)
	if !assert.NotNil(t, m, "RESERVATIONS_ADVERTISED_ADDR host %q: want $(<pod name>).%s.$(<namespace>).svc.<cluster domain>, "+
		"a name that resolves from other namespaces too", host, headless) {
		return
	}
	assert.Equal(t, "metadata.name", defined[m[1]], "$(%s) must be the pod name (fieldRef metadata.name) defined before RESERVATIONS_ADVERTISED_ADDR", m[1])
	assert.Equal(t, "metadata.namespace", defined[m[2]], "$(%s) must be the namespace (fieldRef metadata.namespace) defined before RESERVATIONS_ADVERTISED_ADDR", m[2])
}

// goMemLimitRatio is the share of the container's memory limit that
// GOMEMLIMIT is set to: ~90%, leaving the rest for memory the Go runtime does
// not manage.
const goMemLimitMin, goMemLimitMax = 0.88, 0.92

// checkGoMemLimit: GOMEMLIMIT is a fixed value of about 90% of the
// container's memory limit (a resourceFieldRef can only give 100%, or a
// rounded fraction through its divisor, which is no soft limit).
func checkGoMemLimit(t *testing.T, what string, c container, env map[string]string) {
	t.Helper()
	v, ok := env["GOMEMLIMIT"]
	if !assert.True(t, ok, "%s: GOMEMLIMIT, the Go runtime's soft memory limit, is not set", what) {
		return
	}
	soft, err := parseGoMemLimit(v)
	if !assert.NoError(t, err, "%s: GOMEMLIMIT %q", what, v) {
		return
	}
	limit, err := parseQuantity(c.Resources.Limits["memory"])
	require.NoError(t, err, "%s: resources.limits.memory", what)
	ratio := float64(soft) / float64(limit)
	assert.True(t, ratio >= goMemLimitMin && ratio <= goMemLimitMax,
		"%s: GOMEMLIMIT %s is %.1f%% of the memory limit %s: want about 90%% (%.0f..%.0f MiB)", what, v, 100*ratio,
		c.Resources.Limits["memory"], goMemLimitMin*float64(limit)/(1<<20), goMemLimitMax*float64(limit)/(1<<20))
}

// parseGoMemLimit parses GOMEMLIMIT: bytes with an optional unit B, KiB, MiB,
// GiB or TiB (runtime/debug.SetMemoryLimit's syntax).
func parseGoMemLimit(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			x, err := strconv.ParseInt(n, 10, 64)
			return x * u.mult, err
		}
	}
	if strings.HasPrefix(v, "<from ") {
		return 0, fmt.Errorf("a value computed by Kubernetes, want a fixed value")
	}
	return strconv.ParseInt(v, 10, 64)
}

// parseQuantity parses a Kubernetes memory quantity (plain bytes, or with a
// binary Ki..Ti or decimal k..T suffix).
func parseQuantity(v string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			x, err := strconv.ParseInt(n, 10, 64)
			return x * u.mult, err
		}
	}
	return strconv.ParseInt(v, 10, 64)
}

func TestParseMemory(t *testing.T) {
	for v, want := range map[string]int64{"1843MiB": 1843 << 20, "2GiB": 2 << 30, "1000": 1000, "512KiB": 512 << 10} {
		got, err := parseGoMemLimit(v)
		require.NoError(t, err, v)
		assert.Equal(t, want, got, v)
	}
	_, err := parseGoMemLimit("<from limits.memory>")
	assert.Error(t, err)
	for v, want := range map[string]int64{"2Gi": 2 << 30, "512Mi": 512 << 20, "1G": 1e9, "100": 100} {
		got, err := parseQuantity(v)
		require.NoError(t, err, v)
		assert.Equal(t, want, got, v)
	}
}

type networkPolicy struct {
	Spec struct {
		PodSelector labelSelector `yaml:"podSelector"`
		PolicyTypes []string      `yaml:"policyTypes"`
		Ingress     []struct {
			From []struct {
				PodSelector       *labelSelector `yaml:"podSelector"`
				NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
				IPBlock           any            `yaml:"ipBlock"`
			} `yaml:"from"`
			Ports []struct {
				Protocol string `yaml:"protocol"`
				Port     any    `yaml:"port"`
			} `yaml:"ports"`
		} `yaml:"ingress"`
	} `yaml:"spec"`
}

// adminPods returns the pod templates that serve an admin port: the
// processor's StatefulSet and the sink's Deployment.
func adminPods(t testing.TB, m manifests) map[string]podTemplate {
	t.Helper()
	var sts statefulSet
	as(t, m.ofKind("StatefulSet")[0].raw, &sts)
	var dep deployment
	as(t, m.ofKind("Deployment")[0].raw, &dep)
	return map[string]podTemplate{"processor": sts.Spec.Template, "sink": dep.Spec.Template}
}

// TestNetworkPolicy: a NetworkPolicy selects the processor and the sink pods
// and admits ingress to their admin port only, from this namespace and from
// namespaces chosen by label: never from everywhere, never to other ports.
func TestNetworkPolicy(t *testing.T) {
	m := loadManifests(t)
	pods := adminPods(t, m)

	covered := map[string]bool{}
	for _, o := range m.ofKind("NetworkPolicy") {
		assert.Equal(t, "networking.k8s.io/v1", o.APIVersion)
		var np networkPolicy
		as(t, o.raw, &np)
		var selects []string
		for name, tmpl := range pods {
			if subset(np.Spec.PodSelector.MatchLabels, tmpl.Metadata.Labels) {
				selects = append(selects, name)
				covered[name] = true
			}
		}
		if len(selects) == 0 {
			continue
		}
		assert.Contains(t, np.Spec.PolicyTypes, "Ingress", "NetworkPolicy %s: policyTypes", o.Metadata.Name)
		byNamespace := false
		for i, rule := range np.Spec.Ingress {
			assert.NotEmpty(t, rule.From, "NetworkPolicy %s ingress %d: no from admits every source", o.Metadata.Name, i)
			for _, f := range rule.From {
				assert.Nil(t, f.IPBlock, "NetworkPolicy %s ingress %d: ipBlock", o.Metadata.Name, i)
				if f.NamespaceSelector != nil {
					assert.NotEmpty(t, f.NamespaceSelector.MatchLabels, "NetworkPolicy %s ingress %d: an empty namespaceSelector admits every namespace", o.Metadata.Name, i)
					byNamespace = true
				}
			}
			if assert.NotEmpty(t, rule.Ports, "NetworkPolicy %s ingress %d: no ports admits every port", o.Metadata.Name, i) {
				for _, p := range rule.Ports {
					for _, name := range selects {
						c := pods[name].Spec.Containers[0]
						admin := portOf(t, m.env(t, c)["RESERVATIONS_HTTP_ADDR"])
						assert.True(t, p.Port == "http" || p.Port == admin,
							"NetworkPolicy %s ingress %d admits port %v of the %s pods: only the admin port (http, %d)", o.Metadata.Name, i, p.Port, name, admin)
					}
				}
			}
		}
		assert.True(t, byNamespace, "NetworkPolicy %s: admits no other namespace by label (Prometheus, query clients)", o.Metadata.Name)
	}
	assert.True(t, covered["processor"], "no NetworkPolicy selects the processor pods")
	assert.True(t, covered["sink"], "no NetworkPolicy selects the sink pods")
}

const secretsExample = "k8s/secrets-example"

// exampleSecrets are the Secrets that deploy/k8s/secrets-example generates,
// with the keys and values of its *.env.example files: the Secrets the
// workloads expect to exist.
func exampleSecrets(t testing.TB) []k8sObject {
	t.Helper()
	var k struct {
		SecretGenerator []struct {
			Name string   `yaml:"name"`
			Type string   `yaml:"type"`
			Envs []string `yaml:"envs"`
		} `yaml:"secretGenerator"`
	}
	decodeYAML(t, secretsExample+"/kustomization.yaml", &k)
	var out []k8sObject
	for _, g := range k.SecretGenerator {
		data := map[string]any{}
		for _, env := range g.Envs {
			for _, line := range strings.Split(string(readDeploy(t, secretsExample+"/"+env+".example")), "\n") {
				line = strings.TrimSpace(line)
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				key, val, ok := strings.Cut(line, "=")
				require.True(t, ok, "%s.example: %q is not KEY=VALUE", env, line)
				data[key] = val
			}
		}
		out = append(out, k8sObject{APIVersion: "v1", Kind: "Secret", Metadata: objectMeta{Name: g.Name},
			file: secretsExample + "/kustomization.yaml",
			raw: map[string]any{"apiVersion": "v1", "kind": "Secret", "type": g.Type,
				"metadata": map[string]any{"name": g.Name}, "stringData": data}})
	}
	return out
}

// TestSecretsExample: the example overlay generates every Secret the
// workloads reference, in their namespace, under fixed names, from env files
// that git ignores (only their *.env.example templates are committed).
func TestSecretsExample(t *testing.T) {
	m := loadManifests(t)
	var k struct {
		Namespace        string `yaml:"namespace"`
		Resources        []string
		GeneratorOptions struct {
			DisableNameSuffixHash bool `yaml:"disableNameSuffixHash"`
		} `yaml:"generatorOptions"`
		SecretGenerator []struct {
			Name string   `yaml:"name"`
			Envs []string `yaml:"envs"`
		} `yaml:"secretGenerator"`
	}
	decodeYAML(t, secretsExample+"/kustomization.yaml", &k)
	assert.Equal(t, m.kust.Namespace, k.Namespace, "the Secrets are created in the pipeline's namespace")
	assert.Empty(t, k.Resources, "the example applies only the generated Secrets")
	assert.True(t, k.GeneratorOptions.DisableNameSuffixHash, "the workloads name the Secrets: no hash suffix")

	var ignore []string
	for _, l := range strings.Split(string(readDeploy(t, secretsExample+"/.gitignore")), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			ignore = append(ignore, l)
		}
	}
	generated := map[string]bool{}
	for _, g := range k.SecretGenerator {
		generated[g.Name] = true
		for _, env := range g.Envs {
			ignored := false
			for _, p := range ignore {
				ok, _ := path.Match(p, env)
				ignored = ignored || ok
			}
			assert.True(t, ignored, "%s/%s holds credentials: .gitignore there must ignore it", secretsExample, env)
		}
	}
	for _, kind := range []string{"StatefulSet", "Deployment"} {
		for _, o := range m.ofKind(kind) {
			var spec struct {
				Spec struct {
					Template podTemplate `yaml:"template"`
				} `yaml:"spec"`
			}
			as(t, o.raw, &spec)
			for _, c := range spec.Spec.Template.Spec.Containers {
				for _, ef := range c.EnvFrom {
					if ef.SecretRef != nil {
						assert.True(t, generated[ef.SecretRef.Name], "%s %s reads Secret %s, which %s does not generate",
							kind, o.Metadata.Name, ef.SecretRef.Name, secretsExample)
					}
				}
			}
		}
	}
}

// TestKustomizeBuild builds deploy/k8s and its overlays with kubectl
// kustomize (when kubectl is on PATH): the manifests render, deploy/k8s
// renders no Secret, the example renders the two Secrets from filled-in env
// files.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not on PATH: the kustomizations are checked by the other tests only")
	}
	build := func(dir string) string {
		t.Helper()
		out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
		require.NoError(t, err, "kubectl kustomize %s:\n%s", dir, out)
		return string(out)
	}
	base := build(filepath.Join(deployDir(t), "k8s"))
	assert.NotRegexp(t, `(?m)^kind: Secret$`, base, "deploy/k8s renders a Secret")
	assert.Regexp(t, `(?m)^kind: StatefulSet$`, base)
	assert.Regexp(t, `(?m)^kind: NetworkPolicy$`, base)
	op := build(filepath.Join(deployDir(t), filepath.FromSlash(operatorDir)))
	assert.Regexp(t, `(?m)^kind: PrometheusRule$`, op)
	assert.Regexp(t, `(?m)^kind: PodMonitor$`, op)

	// The example, with its env files filled in from the templates.
	dir := t.TempDir()
	src := filepath.Join(deployDir(t), filepath.FromSlash(secretsExample))
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600))
		if name, ok := strings.CutSuffix(e.Name(), ".example"); ok {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
		}
	}
	secrets := build(dir)
	assert.Contains(t, secrets, "name: reservations-kafka")
	assert.Contains(t, secrets, "name: reservations-postgres")
	assert.Contains(t, secrets, "namespace: reservations")
}
