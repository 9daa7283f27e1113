// Command benchharness runs the benchmark harness (package
// internal/bench) and writes docs/BENCHMARKS.md, docs/bench/latest.json and
// docs/bench/chart.svg. Wiring only: flags -> bench.Config -> bench.Run.
//
//	go run ./internal/bench/cmd/benchharness -mode short -out docs
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/reservations/reservations/internal/bench"
)

func main() {
	var cfg bench.Config
	flag.StringVar(&cfg.Mode, "mode", bench.ModeShort, "short (under 3 minutes on 2 cores) or full")
	flag.StringVar(&cfg.OutDir, "out", "docs", "folder receiving BENCHMARKS.md and bench/{latest.json,chart.svg} (empty: write nothing)")
	flag.StringVar(&cfg.PGDSN, "pg-dsn", os.Getenv("RESERVATIONS_BENCH_PG_DSN"),
		"PostgreSQL DSN for the SQL baselines and the sink (env RESERVATIONS_BENCH_PG_DSN; schemas bench_* are dropped and recreated); empty: start a throwaway cluster")
	flag.StringVar(&cfg.CoreBenchFile, "core-bench", "", "output of `go test -run '^$' -bench 'Apply|Codec' -benchmem ./processor/` to include")
	flag.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write the CPU profile of the pipeline phase here")
	flag.IntVar(&cfg.PoolCap, "pool-cap", 0, "largest pgxpool of the SQL baselines (0: max(16, 4 x CPUs))")
	phases := flag.String("phases", "", "run only these phases, comma-separated (core, pipeline, sql, redis, restore, carts, binary, failover), and write no report files")
	logLevel := flag.String("log-level", "error", "level of the processors' and sink's logs on stderr: debug, info, warn, error")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "benchharness: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "benchharness: -log-level: %v\n", err)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Command = "benchharness " + strings.Join(os.Args[1:], " ")
	if *phases != "" {
		cfg.Phases = strings.Split(*phases, ",")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := bench.Run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "benchharness: %v\n", err)
		os.Exit(1)
	}
}
