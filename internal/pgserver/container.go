package pgserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/reservations/reservations/internal/throwaway"
)

// ContainerImage is the PostgreSQL image run when a Docker engine answers.
const ContainerImage = "postgres:15-alpine"

// Time limits of containers.
const (
	containerStartTimeout = 5 * time.Minute  // first start, including the image pull
	containerStopGrace    = 10 * time.Second // fast shutdown (the image's stop signal is SIGINT) before SIGKILL
	containerOpTimeout    = 2 * time.Minute  // restart, terminate
)

// pgContainer is a PostgreSQL container run by this process. Its host port is
// pinned, so the DSN stays valid across Stop and Start.
type pgContainer struct {
	ctr *tcpostgres.PostgresContainer
	dsn string

	mu     sync.Mutex
	up     bool
	closed bool
}

// StartContainer runs a PostgreSQL container with the settings of the local
// cluster and waits until it accepts connections, whatever opts.Docker says.
func StartContainer(ctx context.Context, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, containerStartTimeout)
	defer cancel()
	// The host port is chosen here so that it survives a restart (Docker
	// gives a container a new ephemeral port on every start). A port that was
	// free a moment ago may be taken before Docker binds it: try a few.
	var errs []error
	for range 3 {
		port, err := throwaway.FreePort()
		if err != nil {
			return nil, err
		}
		c, err := runContainer(ctx, port, opts.settings())
		if err == nil {
			return &Server{dsn: c.dsn, source: "container " + ContainerImage + " (testcontainers) at " + RedactDSN(c.dsn), ctl: c}, nil
		}
		errs = append(errs, fmt.Errorf("host port %d: %w", port, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// runContainer runs the container with 5432 published on port of the Docker
// host.
func runContainer(ctx context.Context, port int, settings []string) (*pgContainer, error) {
	cmd := []string{"postgres"}
	for _, s := range settings {
		cmd = append(cmd, "-c", s)
	}
	ctr, err := tcpostgres.Run(ctx, ContainerImage,
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.WithDatabase("postgres"),
		tcpostgres.BasicWaitStrategies(),
		testcontainers.WithCmd(cmd...),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort("5432/tcp"): {{HostPort: strconv.Itoa(port)}},
			}
		}),
	)
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr) // nil-safe; removes a half-started container
		return nil, err
	}
	host, err := ctr.Host(ctx)
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, fmt.Errorf("container host: %w", err)
	}
	c := &pgContainer{ctr: ctr, up: true,
		dsn: fmt.Sprintf("postgres://postgres:postgres@%s/postgres?sslmode=disable",
			net.JoinHostPort(host, strconv.Itoa(port)))}
	if err := waitAccepting(ctx, c.dsn, nil); err != nil {
		_ = c.close()
		return nil, fmt.Errorf("container at %s: %w", RedactDSN(c.dsn), err)
	}
	return c, nil
}

// resume starts a stopped container and waits until it accepts connections.
func (c *pgContainer) resume(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("container terminated")
	}
	if c.up {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, containerOpTimeout)
	defer cancel()
	if err := c.ctr.Start(ctx); err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	c.up = true
	return waitAccepting(ctx, c.dsn, nil)
}

// halt stops the container; its data survives for resume.
func (c *pgContainer) halt(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.up {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, containerOpTimeout)
	defer cancel()
	grace := containerStopGrace
	if err := c.ctr.Stop(ctx, &grace); err != nil {
		return fmt.Errorf("stop container: %w", err)
	}
	c.up = false
	return nil
}

func (c *pgContainer) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// close removes the container and its data.
func (c *pgContainer) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed, c.up = true, false
	ctx, cancel := context.WithTimeout(context.Background(), containerOpTimeout)
	defer cancel()
	if err := c.ctr.Terminate(ctx); err != nil {
		return fmt.Errorf("terminate container: %w", err)
	}
	return nil
}
