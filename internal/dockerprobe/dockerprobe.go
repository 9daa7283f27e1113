// Package dockerprobe tells test harnesses, cheaply and without hanging,
// whether a Docker engine answers here, so that they can choose between
// testcontainers and servers they run themselves.
//
// Invariants: Engine asks at most once per process and answers within
// Timeout (plus a few milliseconds); when nothing on this machine names a
// Docker endpoint (no DOCKER_HOST, no testcontainers properties file, no
// Docker socket) it answers at once without creating any client. A probe that
// a stuck engine never answers is abandoned, not waited for: its goroutine may
// outlive the answer, blocked in the Docker client.
package dockerprobe

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// EnvDocker turns Docker off for the harnesses: with RESERVATIONS_TEST_DOCKER=0
// Engine answers that there is no engine, whatever runs here.
const EnvDocker = "RESERVATIONS_TEST_DOCKER"

// Timeout bounds the ping of Engine.
const Timeout = 2 * time.Second

// engine caches the answer of Engine for the process.
var engine = sync.OnceValue(func() error {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	return Probe(ctx)
})

// Engine reports whether a Docker engine answers: nil if it does, else why
// not. The first call probes (at most Timeout); later calls return its answer.
func Engine() error { return engine() }

// Probe asks again, uncached: nil when an endpoint is named and the
// testcontainers Docker provider reaches an engine there before ctx ends.
func Probe(ctx context.Context) error {
	if os.Getenv(EnvDocker) == "0" {
		return fmt.Errorf("disabled by %s=0", EnvDocker)
	}
	home, _ := os.UserHomeDir()
	if _, ok := endpoint(os.Getenv, exists, home, os.Getuid()); !ok {
		return errors.New("no DOCKER_HOST, no ~/.testcontainers.properties and no Docker socket " +
			"(/var/run/docker.sock, $XDG_RUNTIME_DIR/docker.sock, ~/.docker/run/docker.sock)")
	}
	// The provider's constructor asks the engine without a deadline (and
	// testcontainers caches the Docker host it finds for the process): ask
	// from a goroutine and stop waiting when ctx ends.
	answer := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				answer <- fmt.Errorf("testcontainers panicked: %v", r)
			}
		}()
		p, err := testcontainers.NewDockerProvider()
		if err != nil {
			answer <- err
			return
		}
		answer <- p.Health(ctx) // Health closes p
	}()
	select {
	case err := <-answer:
		if err != nil {
			return fmt.Errorf("ping Docker engine: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ping Docker engine: no answer: %w", ctx.Err())
	}
}

// endpoint returns the first hint that a Docker endpoint is configured or
// present, in the order testcontainers looks for one. It only reads the
// environment and stats files.
func endpoint(getenv func(string) string, exists func(string) bool, home string, uid int) (string, bool) {
	if h := getenv("DOCKER_HOST"); h != "" {
		return "DOCKER_HOST=" + h, true
	}
	var paths []string
	if home != "" {
		paths = append(paths, filepath.Join(home, ".testcontainers.properties"))
	}
	paths = append(paths, "/var/run/docker.sock")
	if xdg := getenv("XDG_RUNTIME_DIR"); xdg != "" {
		paths = append(paths, filepath.Join(xdg, "docker.sock"))
	}
	if home != "" {
		paths = append(paths,
			filepath.Join(home, ".docker", "run", "docker.sock"),
			filepath.Join(home, ".docker", "desktop", "docker.sock"))
	}
	paths = append(paths, filepath.Join("/run/user", strconv.Itoa(uid), "docker.sock"))
	for _, p := range paths {
		if exists(p) {
			return p, true
		}
	}
	return "", false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
