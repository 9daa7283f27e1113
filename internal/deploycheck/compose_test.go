package deploycheck

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/topics"
)

const composeFile = "compose.yaml"

type composeProject struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Ports       []string `yaml:"ports"`
	Volumes     []string `yaml:"volumes"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

func loadCompose(t testing.TB) composeProject {
	t.Helper()
	var c composeProject
	decodeYAML(t, composeFile, &c)
	require.NotEmpty(t, c.Services)
	return c
}

// mount is a volume of a compose service, short syntax src:dst[:mode].
type mount struct {
	src, dst string
	bind     bool // src is a path on the host, relative to deploy/
}

func (s composeService) mounts(t testing.TB) []mount {
	t.Helper()
	var ms []mount
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		require.True(t, len(parts) == 2 || len(parts) == 3, "volume %q: want src:dst[:mode]", v)
		ms = append(ms, mount{src: parts[0], dst: parts[1],
			bind: strings.HasPrefix(parts[0], ".") || strings.HasPrefix(parts[0], "/")})
	}
	return ms
}

// hostPath maps a path inside the container to the file of deploy/ that a
// bind mount puts there ("" when no bind mount covers it).
func (s composeService) hostPath(t testing.TB, inContainer string) string {
	t.Helper()
	for _, m := range s.mounts(t) {
		if !m.bind {
			continue
		}
		if inContainer == m.dst || strings.HasPrefix(inContainer, m.dst+"/") {
			rel := strings.TrimPrefix(strings.TrimPrefix(inContainer, m.dst), "/")
			return filepath.Join(deployDir(t), filepath.FromSlash(m.src), filepath.FromSlash(rel))
		}
	}
	return ""
}

// underMount reports whether a path inside the container is on a volume.
func (s composeService) underMount(t testing.TB, inContainer string) bool {
	for _, m := range s.mounts(t) {
		if inContainer == m.dst || strings.HasPrefix(inContainer, m.dst+"/") {
			return true
		}
	}
	return false
}

// TestComposeReferences checks that every file and service the compose file
// names exists: the build context and Dockerfile, bind-mounted files and
// folders, named volumes, dependencies (and the healthchecks their
// conditions need).
func TestComposeReferences(t *testing.T) {
	c := loadCompose(t)
	for _, name := range []string{"redpanda", "topics", "postgres", "processor", "sink", "prometheus", "grafana"} {
		require.Contains(t, c.Services, name, "compose service")
	}
	for name, s := range c.Services {
		assert.NotEmpty(t, s.Image, "service %s: image", name)
		if s.Build != nil {
			ctx := filepath.Join(deployDir(t), filepath.FromSlash(s.Build.Context))
			assert.FileExists(t, filepath.Join(ctx, "go.mod"), "service %s: the build context is the module root", name)
			assert.FileExists(t, filepath.Join(ctx, filepath.FromSlash(s.Build.Dockerfile)), "service %s: dockerfile", name)
		}
		for _, m := range s.mounts(t) {
			if m.bind {
				_, err := os.Stat(filepath.Join(deployDir(t), filepath.FromSlash(m.src)))
				assert.NoError(t, err, "service %s mounts %s", name, m.src)
			} else {
				assert.Contains(t, c.Volumes, m.src, "service %s: named volume %s is not declared", name, m.src)
			}
		}
		for dep, d := range s.DependsOn {
			if !assert.Contains(t, c.Services, dep, "service %s depends on", name) {
				continue
			}
			assert.Contains(t, []string{"service_started", "service_healthy", "service_completed_successfully"},
				d.Condition, "service %s depends_on %s", name, dep)
			if d.Condition == "service_healthy" {
				assert.NotNil(t, c.Services[dep].Healthcheck, "service %s waits for %s to be healthy: it has no healthcheck", name, dep)
			}
		}
	}
	// The images built from the repository are the same image.
	assert.Equal(t, c.Services["processor"].Image, c.Services["sink"].Image)
	assert.NotNil(t, c.Services["processor"].Build)
}

// TestComposePipeline checks how the processor and the sink are wired:
// subcommand, brokers, state on a volume, admin address, healthchecks on
// /readyz, published ports, the Postgres DSN, the topic creation.
func TestComposePipeline(t *testing.T) {
	c := loadCompose(t)
	proc, sink, rp := c.Services["processor"], c.Services["sink"], c.Services["redpanda"]

	assert.Equal(t, []string{"serve"}, proc.Command)
	assert.Equal(t, []string{"sink"}, sink.Command)
	for name, s := range map[string]composeService{"processor": proc, "sink": sink} {
		brokers := s.Environment["RESERVATIONS_BROKERS"]
		assert.Contains(t, strings.Join(rp.Command, " "), "--advertise-kafka-addr=internal://"+brokers,
			"%s: RESERVATIONS_BROKERS is redpanda's internal listener", name)
		httpAddr := s.Environment["RESERVATIONS_HTTP_ADDR"]
		host, port, err := net.SplitHostPort(httpAddr)
		require.NoError(t, err, "%s: RESERVATIONS_HTTP_ADDR", name)
		assert.Equal(t, "0.0.0.0", host, "%s: the admin listener must accept connections from other containers", name)
		if assert.NotNil(t, s.Healthcheck, "%s: healthcheck", name) {
			assert.Contains(t, s.Healthcheck.Test, "http://127.0.0.1:"+port+"/readyz", "%s: healthcheck on /readyz", name)
		}
		published := false
		for _, p := range s.Ports {
			published = published || strings.HasSuffix(p, ":"+port)
		}
		assert.True(t, published, "%s: admin port %s published", name, port)
	}

	stateDir := proc.Environment["RESERVATIONS_STATE_DIR"]
	assert.Equal(t, "/data/state", stateDir)
	assert.True(t, proc.underMount(t, stateDir), "processor: %s must be on a volume", stateDir)
	assert.NotEmpty(t, proc.Environment["RESERVATIONS_INSTANCE_ID"], "processor: a stable instance id fences a restarted container's predecessor")

	pg := c.Services["postgres"]
	assert.Equal(t, "postgres:15", pg.Image)
	dsn, err := url.Parse(sink.Environment["RESERVATIONS_PG_DSN"])
	require.NoError(t, err, "RESERVATIONS_PG_DSN")
	assert.Equal(t, "postgres:5432", dsn.Host, "sink: DSN host is the postgres service")
	assert.Equal(t, pg.Environment["POSTGRES_USER"], dsn.User.Username())
	pw, _ := dsn.User.Password()
	assert.Equal(t, pg.Environment["POSTGRES_PASSWORD"], pw)
	assert.Equal(t, "/"+pg.Environment["POSTGRES_DB"], dsn.Path)
	assert.Equal(t, "service_healthy", sink.DependsOn["postgres"].Condition)

	// Without --create-topics the processor only verifies the topics: the
	// one-shot topics service must have created them.
	if proc.Environment["RESERVATIONS_CREATE_TOPICS"] != "true" {
		assert.Equal(t, "service_completed_successfully", proc.DependsOn["topics"].Condition)
	}
}

// TestComposeTopics checks the one-shot topic creation against the topics
// package: the four names of the default prefix, the contract's cleanup
// policies and partition count, and compose's $$ escaping of shell
// variables.
func TestComposeTopics(t *testing.T) {
	s := loadCompose(t).Services["topics"]
	require.Len(t, s.Command, 1, "topics: one script")
	script := s.Command[0]

	created := map[string]string{}
	extra := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s*create (\S+) (\S+)(?: (\S+=\S+))?\s*$`).FindAllStringSubmatch(script, -1) {
		created[m[1]] = m[2]
		extra[m[1]] = m[3]
	}
	names := topics.NewNames(topics.DefaultPrefix)
	want := map[string]string{}
	for _, n := range names.All() {
		want[n] = *names.Configs(n)["cleanup.policy"]
	}
	assert.Equal(t, want, created, "topics created by compose vs the topics package")
	for n, kv := range extra {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		cfg := names.Configs(n)[k]
		if assert.NotNil(t, cfg, "%s: compose sets %s, the topics package does not", n, k) {
			assert.Equal(t, *cfg, v, "%s: %s", n, k)
		}
	}
	assert.Equal(t, strconv.Itoa(topics.DefaultPartitions), s.Environment["PARTITIONS"])

	// Compose interpolates $VAR and ${VAR}; the shell's variables are $$VAR.
	unescaped := regexp.MustCompile(`(^|[^$])\$([A-Za-z_{0-9])`)
	for _, line := range strings.Split(strings.ReplaceAll(script, "$$", ""), "\n") {
		assert.False(t, unescaped.MatchString(line), "topics script: unescaped $ (compose would interpolate it): %q", line)
	}
}

// TestComposeMonitoring follows the Prometheus and Grafana configuration
// through the compose mounts: the config and rule files Prometheus loads are
// deploy/prometheus/*.yml, it scrapes the admin port of the processor and the
// sink, and Grafana's provisioning finds the datasource and the dashboard.
func TestComposeMonitoring(t *testing.T) {
	c := loadCompose(t)
	prom := c.Services["prometheus"]

	var configPath string
	for _, arg := range prom.Command {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			configPath = v
		}
	}
	require.NotEmpty(t, configPath, "prometheus: --config.file")
	host := prom.hostPath(t, configPath)
	require.Equal(t, filepath.Join(deployDir(t), "prometheus", "prometheus.yml"), host, "prometheus config mount")

	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	decodeYAML(t, "prometheus/prometheus.yml", &cfg)
	require.NotEmpty(t, cfg.RuleFiles)
	var rules []string
	for _, rf := range cfg.RuleFiles {
		h := prom.hostPath(t, rf)
		if assert.NotEmpty(t, h, "rule file %s is not mounted", rf) {
			assert.FileExists(t, h)
			rules = append(rules, h)
		}
	}
	assert.Contains(t, rules, filepath.Join(deployDir(t), filepath.FromSlash(rulesFile)))

	scraped := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				h, port, err := net.SplitHostPort(target)
				require.NoError(t, err, target)
				if h == "localhost" {
					continue
				}
				svc, ok := c.Services[h]
				if !assert.True(t, ok, "job %s scrapes %s: no such service", sc.JobName, target) {
					continue
				}
				if addr := svc.Environment["RESERVATIONS_HTTP_ADDR"]; addr != "" {
					assert.Equal(t, fmt.Sprint(portOf(t, addr)), port, "job %s: port of %s's admin listener", sc.JobName, h)
				}
				scraped[h] = true
			}
		}
	}
	assert.True(t, scraped["processor"], "prometheus scrapes the processor")
	assert.True(t, scraped["sink"], "prometheus scrapes the sink")

	graf := c.Services["grafana"]
	prov := graf.hostPath(t, "/etc/grafana/provisioning")
	require.Equal(t, filepath.Join(deployDir(t), "grafana", "provisioning"), prov, "grafana provisioning mount")

	var ds struct {
		Datasources []struct {
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	decodeYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	require.Len(t, ds.Datasources, 1)
	assert.Equal(t, "prometheus", ds.Datasources[0].Type)
	u, err := url.Parse(ds.Datasources[0].URL)
	require.NoError(t, err)
	assert.Equal(t, "prometheus:9090", u.Host, "grafana datasource: the prometheus service")

	var dp struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeYAML(t, "grafana/provisioning/dashboards/reservations.yml", &dp)
	require.Len(t, dp.Providers, 1)
	dir := graf.hostPath(t, dp.Providers[0].Options.Path)
	if assert.NotEmpty(t, dir, "dashboard provider path %s is not mounted", dp.Providers[0].Options.Path) {
		assert.FileExists(t, filepath.Join(dir, path.Base(dashboardFile)))
	}
	if home := graf.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
		assert.Equal(t, filepath.Join(deployDir(t), filepath.FromSlash(dashboardFile)), graf.hostPath(t, home))
	}
}

// dockerfile is deploy/Dockerfile as instructions (continuations joined),
// grouped by stage.
type dockerStage struct {
	from  string
	alias string
	inst  [][2]string // instruction (upper case), arguments
}

func parseDockerfile(t testing.TB) (args map[string]string, stages []*dockerStage) {
	t.Helper()
	args = map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(readDeploy(t, "Dockerfile")))
	var cur strings.Builder
	var lines []string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	for _, l := range lines {
		inst, rest, _ := strings.Cut(l, " ")
		inst = strings.ToUpper(inst)
		rest = strings.Join(strings.Fields(rest), " ")
		switch {
		case inst == "ARG" && len(stages) == 0:
			k, v, _ := strings.Cut(rest, "=")
			args[k] = v
		case inst == "FROM":
			f := strings.Fields(rest)
			st := &dockerStage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.alias = f[2]
			}
			stages = append(stages, st)
		default:
			require.NotEmpty(t, stages, "Dockerfile: %s before FROM", inst)
			st := stages[len(stages)-1]
			st.inst = append(st.inst, [2]string{inst, rest})
		}
	}
	return args, stages
}

func (s *dockerStage) all(inst string) []string {
	var out []string
	for _, i := range s.inst {
		if i[0] == inst {
			out = append(out, i[1])
		}
	}
	return out
}

// TestDockerfile checks the image: a golang build stage of go.mod's Go
// version building ./cmd/reservations statically, a runtime stage running as
// a non-root user with the /data volume, port 8080, `serve` by default, curl
// for the compose healthchecks; and a .dockerignore that keeps local state
// and build output out of the context but not the sources.
func TestDockerfile(t *testing.T) {
	args, stages := parseDockerfile(t)
	require.Len(t, stages, 2, "multi-stage: build and runtime")
	build, final := stages[0], stages[1]

	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	require.NotNil(t, m)
	goVersion := strings.ReplaceAll(build.from, "${GO_VERSION}", args["GO_VERSION"])
	assert.Equal(t, "golang:"+string(m[1]), goVersion, "build stage: the Go of go.mod")
	require.NotEmpty(t, build.alias)

	runs := strings.Join(build.all("RUN"), "\n")
	assert.Contains(t, runs, "CGO_ENABLED=0")
	assert.Regexp(t, `go build .*\./cmd/reservations`, runs)
	// Build stamps (as `make build`'s) and the image's OCI labels.
	for _, stamp := range []string{"-X main.version=${VERSION}", "-X main.commit=${COMMIT}", "-X main.buildDate=${BUILD_DATE}"} {
		assert.Contains(t, runs, stamp, "build stage stamps the binary")
	}
	for _, st := range []*dockerStage{build, final} {
		assert.Subset(t, st.all("ARG"), []string{"VERSION=devel", "COMMIT=unknown", "BUILD_DATE=unknown"}, "stage %s declares the stamp args", st.from)
	}
	labels := strings.Join(final.all("LABEL"), " ")
	for _, l := range []string{`org.opencontainers.image.version="${VERSION}"`, `org.opencontainers.image.revision="${COMMIT}"`,
		`org.opencontainers.image.created="${BUILD_DATE}"`, "org.opencontainers.image.source=", "org.opencontainers.image.title="} {
		assert.Contains(t, labels, l, "OCI label")
	}
	makefile, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	require.NoError(t, err)
	assert.Regexp(t, `docker build -f deploy/Dockerfile --build-arg VERSION=\$\(VERSION\) --build-arg COMMIT=\$\(COMMIT\)`, string(makefile), "make image passes the stamps")

	user := final.all("USER")
	require.NotEmpty(t, user, "runtime stage: USER")
	u := strings.Split(user[len(user)-1], ":")[0]
	assert.NotContains(t, []string{"root", "0"}, u, "runtime stage runs as non-root")
	assert.Contains(t, final.all("EXPOSE"), "8080")
	assert.Contains(t, strings.Join(final.all("VOLUME"), " "), `"/data"`)
	assert.Equal(t, []string{`["serve"]`}, final.all("CMD"))
	entry := final.all("ENTRYPOINT")
	require.Len(t, entry, 1)
	copied := false
	for _, c := range final.all("COPY") {
		copied = copied || (strings.Contains(c, "--from="+build.alias) && strings.Contains(entry[0], strings.Fields(c)[len(strings.Fields(c))-1]))
	}
	assert.True(t, copied, "ENTRYPOINT %s runs the binary copied from the build stage", entry[0])
	env := strings.Join(final.all("ENV"), " ")
	assert.Contains(t, env, "RESERVATIONS_STATE_DIR=/data/state")
	assert.Contains(t, env, "RESERVATIONS_HTTP_ADDR=0.0.0.0:8080")

	c := loadCompose(t)
	for _, name := range []string{"processor", "sink"} {
		if hc := c.Services[name].Healthcheck; hc != nil && slices.Contains(hc.Test, "curl") {
			assert.Regexp(t, `apt-get install .*\bcurl\b`, strings.Join(final.all("RUN"), "\n"),
				"compose healthchecks of %s run curl inside the image", name)
		}
	}

	ignore, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	require.NoError(t, err, ".dockerignore at the repository root")
	var patterns []string
	for _, l := range strings.Split(string(ignore), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimPrefix(l, "/"))
		}
	}
	for _, p := range []string{".git", "data", "bin", "**/*.test"} {
		assert.Contains(t, patterns, p, ".dockerignore")
	}
	entries, err := os.ReadDir(repoRoot(t))
	require.NoError(t, err)
	for _, e := range entries {
		needed := e.Name() == "go.mod" || e.Name() == "go.sum"
		if e.IsDir() {
			matches, _ := filepath.Glob(filepath.Join(repoRoot(t), e.Name(), "*.go"))
			needed = needed || len(matches) > 0 || e.Name() == "cmd" || e.Name() == "internal"
		}
		if !needed {
			continue
		}
		for _, p := range patterns {
			ok, err := filepath.Match(p, e.Name())
			require.NoError(t, err)
			assert.False(t, ok, ".dockerignore pattern %q excludes %s, which the build needs", p, e.Name())
		}
	}
}
