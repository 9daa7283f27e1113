# Developer entry points. `make test` runs everything that matters (unit,
# kfake-backed pipeline and Postgres tests); .ci/run is what CI runs.

GO      ?= go
# linters, run from the module proxy at a pinned version (no go.mod entry)
STATICCHECK_VERSION ?= v0.8.2
GOVULNCHECK_VERSION ?= v1.9.0
BIN     := ./bin
PKGS    := ./...
DATA    := ./data

# Build stamps of `make build` (printed by `reservations version`, labels of
# reservations_build_info); override on the command line, e.g. VERSION=v1.2.0.
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT     ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS    = -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)

.PHONY: run test test-containers vet fmt build bench clean image

## run: the whole pipeline on this machine (embedded Kafka, processor, admin HTTP)
run:
	$(GO) run ./cmd/reservations dev

## test: every test, with the race detector
## (the chaos soak runs after the other packages, not beside them: it measures recovery times, and
## sharing two cores with the pipeline tests starves its processes' group heartbeats)
test:
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list $(PKGS) | grep -v /internal/soak)
	$(GO) test -race -count=1 -timeout 10m ./internal/soak/

## soak-short: the chaos soak in short mode (about 1.5 minutes; `make test` runs it too): broker and
## 3 processors (each with a cart coordinator) as processes, traffic phases and quiet periods,
## SIGKILLs, SIGSTOP zombies, broker faults, compactions, a stale-folder rejoin, a Postgres restart,
## a corrupted store, cart sagas, then every invariant checked (partition ownership from the
## processors' logs too). The last line of the output is the summary.
.PHONY: soak-short soak
soak-short:
	$(GO) test -race -count=1 -timeout 10m -run '^TestSoak$$' -v ./internal/soak/

## soak: the full chaos soak (SOAK=full: >= 1,000,000 commands, >= 20 SIGKILLs; no race detector,
## about 9 minutes). SOAK_COMMANDS, SOAK_KILLS, SOAK_QUIET, SOAK_FREEZES, SOAK_STALE, SOAK_CARTS,
## SOAK_SECONDS, SOAK_SEED, SOAK_DIR: see internal/soak.
soak:
	SOAK=full $(GO) test -count=1 -timeout 60m -run '^TestSoak$$' -v ./internal/soak/

## test-containers: the pipeline, sink and command tests against a Redpanda container
## (testcontainers-go, RESERVATIONS_TEST_CONTAINERS=1) instead of kfake; Postgres tests use a
## postgres:15 container whenever a Docker engine answers (see internal/pgtest). It first runs
## kafkatest's TestNew verbosely: one transaction on the broker, or, without a Docker engine, the
## skip message "RESERVATIONS_TEST_CONTAINERS=1 but no Docker engine: ..." (the Kafka tests below
## are then skipped with it). Tests that need kfake itself get it from kafkatest's RequireFake,
## which skips them here.
test-containers:
	RESERVATIONS_TEST_CONTAINERS=1 $(GO) test -count=1 -run '^TestNew$$' -v ./internal/kafkatest/
	RESERVATIONS_TEST_CONTAINERS=1 $(GO) test -race -count=1 -timeout 30m ./processor/... ./sink/... ./cmd/...

## vet: go vet, and fail on files gofmt would change
vet:
	$(GO) vet $(PKGS)
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed (run 'make fmt'):"; echo "$$unformatted"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

## vulncheck: govulncheck against the Go vulnerability database (needs https://vuln.go.dev; not part of
## `make vet` because the database is not reachable from every build machine).
.PHONY: vulncheck
vulncheck:
	$(GO) run golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) $(PKGS)

## fmt: format all Go files
fmt:
	gofmt -w .

## image: the container image (deploy/Dockerfile) with the same build stamps as `make build` (needs Docker)
IMAGE ?= reservations:$(VERSION)
image:
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
		--build-arg BUILD_DATE=$(BUILD_DATE) -t $(IMAGE) .

## build: the binaries into ./bin, stamped with VERSION, COMMIT and BUILD_DATE (see `reservations version`)
build:
	mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## reset: delete the dev data folder ./data (embedded broker log and processor state) to start over;
## stop `make run` first
.PHONY: reset
reset:
	@if [ -f $(DATA)/dev.lock ] && command -v flock >/dev/null && ! flock -n $(DATA)/dev.lock true; then \
		echo "make reset: $(DATA) is in use by a running 'reservations dev' (make run): stop it first"; exit 1; fi
	@rm -rf $(DATA) && echo "make reset: removed $(DATA) (broker log and processor state); the next 'make run' starts empty"

## bench: the benchmark harness, full mode: this pipeline end to end vs the Postgres
## row-lock designs vs the broker's exactly-once pass-through, restore, sink, expiry, pure core.
## Writes docs/BENCHMARKS.md, docs/bench/latest.json, docs/bench/chart.svg (and the git-ignored
## CPU profile docs/bench/cpu.prof), then the HTTP API load (bench-http). RESERVATIONS_BENCH_PG_DSN names a Postgres to use instead of
## a throwaway cluster.
bench:
	mkdir -p docs/bench
	$(GO) test -run '^$$' -bench 'Apply|Codec' -benchmem ./processor/sku/ > docs/bench/core-bench.txt || { cat docs/bench/core-bench.txt; exit 1; }
	$(GO) run ./internal/bench/cmd/benchharness -mode full -out docs -core-bench docs/bench/core-bench.txt -cpuprofile docs/bench/cpu.prof
	$(MAKE) bench-http

## bench-short: the same harness in short mode (about 5 minutes on 2 cores; needs redis-server)
.PHONY: bench-short
bench-short:
	mkdir -p docs/bench
	$(GO) test -run '^$$' -bench 'Apply|Codec' -benchmem -benchtime 300ms ./processor/sku/ > docs/bench/core-bench.txt || { cat docs/bench/core-bench.txt; exit 1; }
	$(GO) run ./internal/bench/cmd/benchharness -mode short -out docs -core-bench docs/bench/core-bench.txt -cpuprofile docs/bench/cpu.prof

## clean: remove build output (the dev data folder ./data is kept: rm -rf ./data to start over)
clean:
	rm -rf $(BIN)

## examples: the callers in other languages (docs/EXAMPLES.md), each against kfake and an in-process
## processor: the Python one (confluent-kafka; also part of `make test`) and the Node one (kafkajs), after
## `npm ci` in examples/node (needs Node.js >= 18, npm and the npm registry; .ci/run runs this target)
.PHONY: examples
examples:
	cd examples/node && npm ci --no-audit --no-fund
	$(GO) test -race -count=1 -tags examples_node ./examples/

## bench-http: load through the HTTP API of the commands (throughput, p50/p95/p99 at 16..1024
## concurrent callers; an in-process broker and processor). About a minute; writes docs/bench/http.json.
.PHONY: bench-http
bench-http:
	mkdir -p docs/bench
	$(GO) run ./internal/bench/cmd/httpload -concurrency 16,64,256,1024 -duration 10s -out docs/bench/http.json
