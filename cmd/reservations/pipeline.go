package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/topics"
)

// pipelineConfig is what dev and serve share: logging, the admin HTTP
// listener, topic names and the processor's tuning.
type pipelineConfig struct {
	Log                logFlags
	HTTPAddr           string
	AdvertisedAddr     string
	TopicPrefix        string
	Group              string
	InstanceID         string
	StaticMembership   bool
	LeaveGroup         bool
	SessionTimeout     time.Duration
	CommitInterval     time.Duration
	MaxBatch           int
	StateCacheMB       int64
	DedupeWindow       time.Duration
	MaxExtensions      int64
	TransactionTimeout time.Duration
	StandbyReplicas    int
	Carts              bool
	CartGroup          string
	AllowOtherGroups   []string
}

// names are the topic names of the prefix.
func (p *pipelineConfig) names() topics.Names { return topics.NewNames(p.TopicPrefix) }

// register adds the shared settings; the processor's take their defaults from
// processor.DefaultConfig (and the cart coordinator's group from its role's).
func (p *pipelineConfig) register(s *settings) {
	def := processor.DefaultConfig()
	p.Log.register(s, slog.LevelInfo)
	s.String(&p.HTTPAddr, "http-addr", "127.0.0.1:8080",
		"admin HTTP listener (host:port) serving /healthz, /readyz, /metrics and the interactive queries under /v1/")
	s.String(&p.AdvertisedAddr, "advertised-addr", "",
		"host:port at which other instances and clients reach this admin listener (Kafka Streams' application.server): "+
			"queries for a SKU that another instance owns are redirected to the owner's")
	s.ShowDefault("advertised-addr", "--http-addr unless its host is 0.0.0.0, :: or empty")
	s.String(&p.TopicPrefix, "topic-prefix", topics.DefaultPrefix,
		"topic name prefix: <prefix>.commands, .results, .changelog, .dlq")
	s.String(&p.Group, "group", def.Group,
		"consumer group of the processor, also the prefix of its transactional id")
	s.String(&p.InstanceID, "instance-id", "",
		"stable id of this instance within the group (transactional id suffix); empty: read from or created in <state-dir>/instance-id")
	s.ShowDefault("instance-id", "from <state-dir>/instance-id")
	s.Bool(&p.StaticMembership, "static-membership", true,
		"with --instance-id, join the group as a static member (group.instance.id): a restart within --session-timeout moves no partition; "+
			"false: leave the group on every stop, partitions move at once")
	s.Bool(&p.LeaveGroup, "leave-group-on-shutdown", false,
		"a static member leaves the group when it stops (SIGTERM), so its partitions move at once instead of after --session-timeout: "+
			"for a stop meant to last (scale-in), not for a restart")
	s.Duration(&p.SessionTimeout, "session-timeout", 0,
		"how long the group waits for a member that stopped heartbeating (crash, freeze, restart of a static member) before moving its partitions")
	s.ShowDefault("session-timeout", fmt.Sprintf("%s with static membership, else %s",
		shortDuration(processor.DefaultStaticSessionTimeout), shortDuration(processor.DefaultSessionTimeout)))
	s.Duration(&p.CommitInterval, "commit-interval", def.CommitInterval,
		"longest time one transaction collects records before it commits")
	s.Int(&p.MaxBatch, "max-batch", def.MaxBatch, "most command records per transaction")
	s.Int64(&p.StateCacheMB, "state-cache-mb", def.StateCacheBytes>>20,
		"MiB of heap for the caches of decoded committed state of one role's partitions (the SKU processor, and with --carts "+
			"the cart coordinator, each this much); each partition gets this divided by the input topic's partitions, so an "+
			"instance running a third of them holds a third; a read the cache misses goes to the partition's Badger store")
	s.Duration(&p.DedupeWindow, "dedupe-window", def.Rules.DedupeWindow,
		"how long a decided command_id is remembered: a re-sent command produced within it returns its result with duplicate:true, however late it is processed (min "+
			shortDuration(processor.MinDedupeWindow)+")")
	s.Int64(&p.MaxExtensions, "max-extensions", def.Rules.MaxExtensions,
		"how often one reservation may be extended (0: never)")
	s.Duration(&p.TransactionTimeout, "transaction-timeout", def.TransactionTimeout,
		"broker-side timeout of an open transaction: how long a crashed instance can block readers of its partitions")
	s.Int(&p.StandbyReplicas, "standby-replicas", def.StandbyReplicas,
		"how many other instances keep a warm copy of each partition's state by tailing its changelog, for a failover that replays only the tail "+
			"(Kafka Streams' num.standby.replicas; capped at the other instances; costs a store copy and a changelog reader per copy, see docs/STANDBY.md)")
	s.Bool(&p.Carts, "carts", true,
		"also run the cart coordinator (all-or-nothing cart holds: <prefix>.cart-commands -> <prefix>.cart-results) in this process")
	s.String(&p.CartGroup, "cart-group", processor.DefaultRoleConfig(processor.RoleCart).Group,
		"consumer group of the cart coordinator, also the prefix of its transactional id")
	s.Var(list{&p.AllowOtherGroups}, "allow-other-groups",
		"other consumer groups allowed on <prefix>.commands and .cart-commands, comma-separated (*: no check); "+
			"without it, a group besides --group and --cart-group with members or committed offsets there stops the start: "+
			"a second deployment would decide every command again")
	s.ShowDefault("allow-other-groups", "none")
}

// validate checks the shared settings, naming the one that is wrong.
func (p *pipelineConfig) validate(s *settings) error {
	var errs []error
	if _, _, err := net.SplitHostPort(p.HTTPAddr); err != nil {
		errs = append(errs, s.Invalid("http-addr", "%q is not host:port", p.HTTPAddr))
	}
	if p.AdvertisedAddr != "" {
		host, port, err := net.SplitHostPort(p.AdvertisedAddr)
		switch {
		case err != nil:
			errs = append(errs, s.Invalid("advertised-addr", "%q is not host:port", p.AdvertisedAddr))
		case unspecifiedHost(host):
			errs = append(errs, s.Invalid("advertised-addr", "%q: want a host name or address that others can reach, not %q", p.AdvertisedAddr, host))
		case port == "" || port == "0":
			errs = append(errs, s.Invalid("advertised-addr", "%q: want the port others reach", p.AdvertisedAddr))
		}
	}
	if p.StateCacheMB > math.MaxInt64>>20 {
		errs = append(errs, s.Invalid("state-cache-mb", "%d: too large", p.StateCacheMB))
	}
	if p.TopicPrefix == "" {
		errs = append(errs, s.Invalid("topic-prefix", "must not be empty"))
	}
	if p.Carts && (p.CartGroup == "" || p.CartGroup == p.Group) {
		errs = append(errs, s.Invalid("cart-group", "%q: must be set and differ from %s", p.CartGroup, s.Name("group")))
	}
	// The processor's own rules. Brokers and the state folder are each
	// subcommand's (dev has neither as a setting): they check them.
	pc := p.processorConfig([]string{"-"}, "-")
	errs = append(errs, settingErrors(s, pc.Validate()))
	return errors.Join(errs...)
}

// settingErrors names the settings of a processor.Config.Validate error as
// the command line does (flag and variable); errors of settings this
// command does not have stay as they are.
func settingErrors(s *settings, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range unjoin(err) {
		var se *processor.SettingError
		if errors.As(e, &se) && s.lookup(se.Setting) != nil {
			e = s.Invalid(se.Setting, "%s", se.Problem)
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// unjoin returns the errors joined in err (err itself when it joins none).
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// processorConfig maps the settings onto processor.DefaultConfig(): the
// processor's settings without a flag keep their defaults.
func (p *pipelineConfig) processorConfig(brokers []string, stateDir string) processor.Config {
	c := processor.DefaultConfig()
	c.Brokers = brokers
	c.Topics = topics.NewNames(p.TopicPrefix)
	c.Group = p.Group
	c.InstanceID = p.InstanceID
	c.DynamicMembership = !p.StaticMembership
	c.LeaveGroupOnShutdown = p.LeaveGroup
	c.SessionTimeout = p.SessionTimeout
	if c.SessionTimeout == 0 {
		c.SessionTimeout = processor.DefaultSessionTimeoutFor(c.StaticMembership())
	}
	c.StateDir = stateDir
	c.CommitInterval = p.CommitInterval
	c.MaxBatch = p.MaxBatch
	c.StateCacheBytes = p.StateCacheMB << 20
	if p.StateCacheMB > math.MaxInt64>>20 {
		c.StateCacheBytes = math.MaxInt64 // refused by validate
	}
	c.TransactionTimeout = p.TransactionTimeout
	c.StandbyReplicas = p.StandbyReplicas
	c.Rules = sku.Rules{DedupeWindow: p.DedupeWindow, MaxExtensions: p.MaxExtensions}
	// The coordinator remembers cart command ids as long as the processor
	// its command ids.
	c.CartRules.DedupeWindow = p.DedupeWindow
	return c
}

// cartConfig is the cart coordinator's config derived from the processor's:
// same brokers, topics, state root (its stores are named after the
// cart-changelog topic), instance id, advertised address (the same admin
// listener answers /v1/carts/) and tuning; its own group.
func (p *pipelineConfig) cartConfig(pcfg processor.Config) processor.Config {
	c := pcfg
	c.Role = processor.RoleCart
	c.Group = p.CartGroup
	return c
}

// newCoordinator returns the cart coordinator when --carts is on, else nil.
func (p *pipelineConfig) newCoordinator(pcfg processor.Config, log *slog.Logger, reg prometheus.Registerer) (*processor.Processor, error) {
	if !p.Carts {
		return nil, nil
	}
	coord, err := processor.New(p.cartConfig(pcfg), processor.WithLogger(log.With("component", "cart-coordinator")),
		processor.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("cart coordinator: %w", err)
	}
	return coord, nil
}

// withCarts is ready while both the processor and the cart coordinator are,
// and reports the coordinator's partitions in /readyz.
type withCarts struct {
	readiness
	carts readiness
}

func (w withCarts) Ready() bool                  { return w.readiness.Ready() && w.carts.Ready() }
func (w withCarts) CartStatus() map[int32]string { return w.carts.Status() }

// unspecifiedHost reports whether host is no address others can reach: empty
// or a wildcard listen address.
func unspecifiedHost(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// advertisedAddr is the address this instance advertises for interactive
// queries: --advertised-addr, else --http-addr with the port the listener
// got (for port 0) when its host is one others can reach, else "" (a query
// for a SKU another instance owns then answers 503 instead of redirecting).
func (p *pipelineConfig) advertisedAddr(listening net.Addr) string {
	if p.AdvertisedAddr != "" {
		return p.AdvertisedAddr
	}
	host, port, err := net.SplitHostPort(p.HTTPAddr)
	if err != nil || unspecifiedHost(host) {
		return ""
	}
	if tcp, ok := listening.(*net.TCPAddr); ok && tcp.Port != 0 {
		port = strconv.Itoa(tcp.Port)
	}
	return net.JoinHostPort(host, port)
}

// newRegistry returns the process's Prometheus registry: Go runtime and
// process collectors and reservations_build_info, whose labels are the
// values `reservations version` prints (buildInfo).
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	b := buildInfo()
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "reservations", Name: "build_info",
		Help: "Always 1; the labels name the running build (as `reservations version` prints it): " +
			"build_date is the build time, or the commit time for a binary built without the Makefile's ldflags.",
	}, []string{"version", "revision", "build_date", "goversion"})
	info.WithLabelValues(b.Version, b.Commit, b.Date, b.GoVersion).Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info,
	)
	return reg
}

// listenHTTP binds the admin listener before anything starts, so a taken
// address fails the start at once.
func listenHTTP(s *settings, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("admin HTTP address %s is already in use: choose another with %s", addr, s.Name("http-addr"))
	}
	if err != nil {
		return nil, fmt.Errorf("admin HTTP listener %s (%s): %w", addr, s.Name("http-addr"), err)
	}
	return ln, nil
}

// component is one long-running part of a process: run blocks until ctx
// ends (nil) or the component fails.
type component struct {
	name string
	run  func(ctx context.Context) error
}

// runComponents runs comps and the admin HTTP server (handler on ln) in one
// errgroup until ctx ends (nil) or one of them fails (its error); then the
// others are stopped. stopping is logged when ctx ends.
func runComponents(ctx context.Context, log *slog.Logger, handler http.Handler, ln net.Listener,
	stopping string, comps ...component) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range comps {
		g.Go(func() error {
			err := c.run(gctx)
			log.Debug("component stopped", "component", c.name, "err", err)
			return err
		})
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			log.Info(stopping)
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("admin http server: shutdown", "err", err)
		}
		return nil
	})
	return g.Wait()
}

// runPipeline runs the processor, the sink (when snk is not nil) and the
// admin HTTP server (with the processor's interactive queries under /v1/) in
// one errgroup until ctx ends (nil) or one of them fails (its error). The
// processor's context ends first; Run returns only once every partition
// stopped at a transaction boundary. ready is what /readyz reports: proc
// itself, or a stricter view of it.
func runPipeline(ctx context.Context, log *slog.Logger, proc, coord *processor.Processor, ready readiness,
	ln net.Listener, reg *prometheus.Registry, snk *sinkRunner) error {
	comps := []component{
		{"processor", func(gctx context.Context) error {
			err := proc.Run(gctx)
			if err != nil {
				return fmt.Errorf("processor: %w", err)
			}
			if gctx.Err() == nil {
				return errors.New("processor: stopped without being asked to")
			}
			return nil
		}},
		{"ready-log", func(gctx context.Context) error {
			logWhenReady(gctx, log, ready)
			return nil
		}},
	}
	stopping := "shutting down: stopping the processor at a transaction boundary"
	if coord != nil {
		comps = append(comps, component{"cart-coordinator", func(gctx context.Context) error {
			err := coord.Run(gctx)
			if err != nil {
				return fmt.Errorf("cart coordinator: %w", err)
			}
			if gctx.Err() == nil {
				return errors.New("cart coordinator: stopped without being asked to")
			}
			return nil
		}})
		stopping += ", the cart coordinator"
	}
	if snk != nil {
		sinkLog := log.With("component", "sink")
		comps = append(comps, component{"sink", func(gctx context.Context) error { return snk.run(gctx, sinkLog) }})
		stopping += ", and the sink"
	}
	queries := proc.QueryHandler()
	if coord != nil {
		mux := http.NewServeMux()
		mux.Handle("/v1/carts/", coord.QueryHandler())
		mux.Handle("/v1/", queries)
		queries = mux
	}
	return runComponents(ctx, log, adminHandler(ready, reg, queries), ln, stopping, comps...)
}

// logWhenReady logs once when the processor first becomes ready with at
// least one partition.
func logWhenReady(ctx context.Context, log *slog.Logger, proc readiness) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if proc.Ready() && len(proc.Status()) > 0 {
				log.Info("processor ready", "partitions", len(proc.Status()))
				return
			}
		}
	}
}
