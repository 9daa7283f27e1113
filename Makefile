# Developer entry points. `make test` runs everything that matters (unit,
# kfake-backed pipeline and Postgres tests); .ci/run is what CI runs.

GO      ?= go
BIN     := ./bin
PKGS    := ./...

.PHONY: run test vet fmt build bench clean

## run: the whole pipeline on this machine (embedded Kafka, processor, admin HTTP)
run:
	$(GO) run ./cmd/reservations dev

## test: every test, with the race detector
test:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## vet: go vet, and fail on files gofmt would change
vet:
	$(GO) vet $(PKGS)
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed (run 'make fmt'):"; echo "$$unformatted"; exit 1; fi

## fmt: format all Go files
fmt:
	gofmt -w .

## build: the binaries into ./bin
build:
	mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

## bench: the Go benchmarks (placeholder: the full load harness comes later)
bench:
	@echo "Running the Go benchmarks only; the full benchmark harness (reservations bench) comes later."
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## clean: remove build output (the dev data folder ./data is kept: rm -rf ./data to start over)
clean:
	rm -rf $(BIN)
