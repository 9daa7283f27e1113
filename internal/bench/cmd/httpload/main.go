// Command httpload measures the HTTP API of the commands under load (package
// internal/bench, RunHTTPLoad): an in-process kfake broker and processor, the
// request/reply client and the HTTP API on loopback, and closed-loop callers
// at each concurrency. Wiring only.
//
//	httpload [-concurrency 16,64,256,1024] [-duration 10s] [-out docs/bench/http.json] [-cpuprofile file] [-memprofile file]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reservations/reservations/internal/bench"
)

func main() {
	var (
		cfg  bench.HTTPLoadConfig
		conc string
		out  string
	)
	flag.StringVar(&conc, "concurrency", "16,64,256,1024", "concurrent HTTP callers of each step, comma-separated")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of each step (plus a warm-up of a tenth)")
	flag.IntVar(&cfg.SKUs, "skus", 1000, "SKUs the reserves spread over")
	partitions := flag.Int("partitions", 12, "partitions of the topics")
	flag.DurationVar(&cfg.CommitInterval, "commit-interval", 20*time.Millisecond, "the processor's commit interval")
	flag.IntVar(&cfg.Clients, "clients", 1, "request/reply clients behind the HTTP API")
	flag.StringVar(&out, "out", "", "write the report as JSON to this file")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memProfile := flag.String("memprofile", "", "write a heap profile to this file after the last step")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "httpload: -cpuprofile:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	cfg.Partitions = int32(*partitions)
	for _, f := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "httpload: -concurrency: %q is not a positive integer\n", f)
			os.Exit(2)
		}
		cfg.Concurrency = append(cfg.Concurrency, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *memProfile != "" {
		cfg.AfterSteps = func() error {
			f, err := os.Create(*memProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			return pprof.Lookup("heap").WriteTo(f, 0)
		}
	}
	rep, err := bench.RunHTTPLoad(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpload:", err)
		os.Exit(1)
	}
	if out != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "httpload:", err)
			os.Exit(1)
		}
	}
}
