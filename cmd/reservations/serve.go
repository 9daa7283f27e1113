package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/client/httpapi"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/topics"
)

// defaultStateDir is the processor's state folder of serve and replay: dev's
// <data-dir>/state with the default data folder.
const defaultStateDir = "./data/state"

type serveConfig struct {
	pipelineConfig
	Brokers      []string
	CreateTopics bool
	Partitions   int
	Replication  int
	StateDir     string
	APIAddr      string
	Security     kafkaSecurity
}

func serveCommand() *command {
	return &command{
		name:    "serve",
		summary: "run the processor and admin HTTP against a Kafka cluster",
		help: `
Runs the processor against a real Kafka cluster (--brokers), with the admin
HTTP listener (/healthz, /readyz, /metrics, and the interactive queries
GET /v1/stock/{sku} and /v1/stock/{sku}/reservations/{id}). Start one instance
per machine or pod, all with the same --group; partitions are spread over them
and move on failure. Each instance keeps its partitions' state in --state-dir
(a local disk; it is rebuilt from the changelog when missing). A query for a
SKU another instance owns is redirected (307) to that instance's
--advertised-addr.

TLS and SASL: --kafka-tls, --kafka-ca-file, --kafka-cert-file and
--kafka-key-file, --kafka-sasl-mechanism with --kafka-user and the password
in RESERVATIONS_KAFKA_PASSWORD (or a file named by
RESERVATIONS_KAFKA_PASSWORD_FILE), or OAUTHBEARER with a token in
RESERVATIONS_KAFKA_OAUTH_TOKEN(_FILE). The instance checks at startup that it
can connect and authenticate, and exits 1 saying why when it cannot.

With --api-addr, the instance also serves the HTTP API of the commands
(POST /v1/reservations, /v1/stock/{sku}, /v1/carts/{cart_id}/...; see
docs/HTTP_API.md) on that listener: each request is one command, sent to
Kafka and answered with its result. It has no authentication of its own:
bind it to loopback or a private network.

One deployment per topic prefix: before starting, the instance looks for
consumer groups other than --group and --cart-group with members or
committed offsets on <prefix>.commands and .cart-commands (another
deployment would decide every command a second time) and exits 1 naming
them, unless --allow-other-groups lists them.

The topics must exist with the contract's layout (commands, results and
changelog with one partition count, changelog compacted): the processor
verifies it at startup and refuses to run otherwise. --create-topics creates
missing topics first (with --partitions and --replication); in production,
create them with your usual tooling instead.

Stop it with Ctrl-C or SIGTERM: partitions stop at a transaction boundary and
the instance leaves the group.`,
		setup: func() (*settings, func(context.Context, *cli, []string) int) {
			var cfg serveConfig
			s := newSettings("serve")
			cfg.register(s)
			return s, func(ctx context.Context, c *cli, args []string) int {
				if len(args) > 0 {
					return c.usageFailure("serve", fmt.Errorf("unexpected argument %q", args[0]))
				}
				if err := cfg.validate(s); err != nil {
					return c.usageFailure("serve", err)
				}
				return runServe(ctx, c, s, cfg)
			}
		},
	}
}

func (cfg *serveConfig) register(s *settings) {
	s.Var(list{&cfg.Brokers}, "brokers", "Kafka seed brokers, comma-separated host:port")
	s.ShowDefault("brokers", "required")
	s.Bool(&cfg.CreateTopics, "create-topics", false, "create missing topics at startup (default: only verify them)")
	s.Int(&cfg.Partitions, "partitions", topics.DefaultPartitions, "partitions of each topic created by --create-topics")
	s.Int(&cfg.Replication, "replication", -1, "replication factor of topics created by --create-topics (-1: the broker default)")
	s.String(&cfg.StateDir, "state-dir", defaultStateDir, "folder of the processor's local state (one Badger store per partition)")
	s.String(&cfg.APIAddr, "api-addr", "",
		"listener (host:port) of the HTTP API of the commands (POST /v1/reservations, /v1/stock/{sku}, /v1/carts/...; docs/HTTP_API.md), "+
			"e.g. 127.0.0.1:8090; unauthenticated: bind it to loopback or a private network")
	s.ShowDefault("api-addr", "off")
	cfg.Security.register(s)
	cfg.pipelineConfig.register(s)
}

func (cfg *serveConfig) validate(s *settings) error {
	var errs []error
	if len(cfg.Brokers) == 0 {
		errs = append(errs, fmt.Errorf("%s is required", s.Name("brokers")))
	}
	if cfg.Partitions < 1 || cfg.Partitions > 10000 {
		errs = append(errs, s.Invalid("partitions", "%d: want 1..10000", cfg.Partitions))
	}
	if cfg.Replication == 0 || cfg.Replication < -1 || cfg.Replication > 32767 {
		errs = append(errs, s.Invalid("replication", "%d: want -1 or 1..32767", cfg.Replication))
	}
	if cfg.StateDir == "" {
		errs = append(errs, s.Invalid("state-dir", "must not be empty"))
	}
	if cfg.APIAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.APIAddr); err != nil {
			errs = append(errs, s.Invalid("api-addr", "%q is not host:port", cfg.APIAddr))
		} else if cfg.APIAddr == cfg.HTTPAddr {
			errs = append(errs, s.Invalid("api-addr", "%q: must differ from %s", cfg.APIAddr, s.Name("http-addr")))
		}
	}
	errs = append(errs, cfg.Security.validate(s), cfg.pipelineConfig.validate(s))
	return errors.Join(errs...)
}

func runServe(ctx context.Context, c *cli, s *settings, cfg serveConfig) int {
	log := c.logger(cfg.Log)
	fail := func(err error) int { return c.fail("serve", exitFailure, err) }

	pcfg := cfg.processorConfig(cfg.Brokers, cfg.StateDir)
	pcfg.KafkaOpts = cfg.Security.Opts()
	ln, err := listenHTTP(s, cfg.HTTPAddr)
	if err != nil {
		return fail(err)
	}
	defer ln.Close()
	pcfg.AdvertisedAddr = cfg.advertisedAddr(ln.Addr())

	cfg.Security.log(log, s, cfg.Brokers)
	if err := cfg.Security.check(ctx, cfg.Brokers); err != nil {
		return fail(err)
	}
	if cfg.CreateTopics {
		n, err := createTopics(ctx, cfg.Brokers, pcfg.Topics, int32(cfg.Partitions), int16(cfg.Replication), pcfg.KafkaOpts...)
		if err != nil {
			return fail(err)
		}
		log.Info("topics ready", "commands", pcfg.Topics.Commands, "partitions", n)
	} else if err := verifyTopics(ctx, cfg.Brokers, pcfg.Topics, cfg.Carts, pcfg.KafkaOpts...); err != nil {
		if errors.Is(err, topics.ErrMissing) {
			err = fmt.Errorf("%w (create the topics, or start once with %s)", err, s.Name("create-topics"))
		}
		return fail(err)
	}
	if err := checkOtherGroups(ctx, log, s, cfg.Brokers, pcfg.KafkaOpts, cfg.inputGroups(), cfg.AllowOtherGroups); err != nil {
		return fail(err)
	}

	reg := newRegistry()
	proc, err := processor.New(pcfg, processor.WithLogger(log.With("component", "processor")), processor.WithRegisterer(reg))
	if err != nil {
		return fail(err)
	}
	var ready readiness = proc
	coord, err := cfg.newCoordinator(pcfg, log, reg)
	if err != nil {
		return fail(err)
	}
	if coord != nil {
		ready = withCarts{proc, coord}
	}
	log.Info("reservations serve running", append([]any{"brokers", cfg.Brokers, "state_dir", cfg.StateDir,
		"http", "http://" + ln.Addr().String(), "advertised_addr", pcfg.AdvertisedAddr,
		"group", pcfg.Group, "transactional_id", proc.TransactionalID()}, buildInfo().LogAttrs()...)...)
	if pcfg.AdvertisedAddr == "" {
		log.Info("no advertised address: a query for a SKU another instance owns answers 503 instead of redirecting to the owner; set " +
			s.Name("advertised-addr") + " to redirect")
	}
	var apiLn net.Listener
	if cfg.APIAddr != "" {
		if apiLn, err = listenAPI(s, cfg.APIAddr); err != nil {
			return fail(err)
		}
		defer apiLn.Close()
		api, err := client.New(ctx, cfg.Brokers, client.WithTopicPrefix(cfg.TopicPrefix), client.WithSecurity(cfg.Security.Config),
			client.WithLogger(log.With("component", "http-api")))
		if err != nil {
			return fail(fmt.Errorf("http api: %w", err))
		}
		defer api.Close()
		apiHandler := httpapi.New(api, httpapi.Config{Logger: log.With("component", "http-api")})
		log.Info("http api listening", "addr", "http://"+apiLn.Addr().String())
		if err := runWithAPI(ctx, log, apiHandler, apiLn, func(gctx context.Context) error {
			return runPipeline(gctx, log, proc, coord, ready, ln, reg, nil)
		}); err != nil {
			return fail(err)
		}
		log.Info("processor stopped")
		return exitOK
	}
	if err := runPipeline(ctx, log, proc, coord, ready, ln, reg, nil); err != nil {
		if errors.Is(err, topics.ErrMissing) && !cfg.CreateTopics {
			err = fmt.Errorf("%w (create the topics, or start once with %s)", err, s.Name("create-topics"))
		}
		return fail(err)
	}
	log.Info("processor stopped")
	return exitOK
}

// verifyTopics checks the topic layout before anything starts (the
// processor's topics, then the cart topics when the coordinator runs), so a
// missing topic is reported once, naming it.
func verifyTopics(ctx context.Context, brokers []string, names topics.Names, carts bool, opts ...kgo.Opt) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return fmt.Errorf("kafka admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := topics.Verify(ctx, adm, names); err != nil {
		return err
	}
	if carts {
		if _, err := topics.Verify(ctx, adm, names.Cart()); err != nil {
			return fmt.Errorf("cart coordinator (--carts): %w", err)
		}
	}
	return nil
}

// listenAPI binds the HTTP API's listener before anything starts.
func listenAPI(s *settings, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("HTTP API address %s is already in use: choose another with %s", addr, s.Name("api-addr"))
	}
	if err != nil {
		return nil, fmt.Errorf("HTTP API listener %s (%s): %w", addr, s.Name("api-addr"), err)
	}
	return ln, nil
}

// runWithAPI runs pipeline and the HTTP API server on ln until ctx ends or
// one of them fails; then the other stops too.
func runWithAPI(ctx context.Context, log *slog.Logger, api http.Handler, ln net.Listener,
	pipeline func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pipeline(gctx) })
	g.Go(func() error {
		if err := runComponents(gctx, log, api, ln, "stopping the HTTP API"); err != nil {
			return fmt.Errorf("http api: %w", err)
		}
		return nil
	})
	return g.Wait()
}
