// Command httpload measures the HTTP API of the commands under load (package
// internal/bench, RunHTTPLoad): an in-process kfake broker and processor, the
// request/reply client and the HTTP API on loopback, and closed-loop callers
// at each concurrency. With -broker-process the broker runs in a process of
// its own (this binary again, with -serve-broker). Wiring only.
//
//	httpload [-concurrency 16,64,256,1024] [-duration 10s] [-out docs/bench/http.json]
//	         [-broker-process | -http-only] [-cpuprofile file] [-memprofile file]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reservations/reservations/internal/bench"
)

func main() { os.Exit(run()) }

func run() int {
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
	flag.BoolVar(&cfg.HTTPOnly, "http-only", false, "answer every call at once without a broker or a processor: what the HTTP layer alone costs")
	brokerProcess := flag.Bool("broker-process", false, "run the kfake broker in a process of its own (its in-memory log then stays out of this process's heap and GC)")
	serveBroker := flag.Bool("serve-broker", false, "internal: be the broker process (prints \"ready <host:port>\", runs until stdin closes or SIGTERM)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (not of a -broker-process) to this file")
	memProfile := flag.String("memprofile", "", "write a heap profile of this process to this file after the last step")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *serveBroker {
		if err := bench.RunBroker(ctx, 0, os.Stdout, os.Stdin); err != nil {
			fmt.Fprintln(os.Stderr, "httpload broker:", err)
			return 1
		}
		return 0
	}
	if *brokerProcess && cfg.HTTPOnly {
		fmt.Fprintln(os.Stderr, "httpload: -broker-process and -http-only exclude each other (-http-only runs no broker)")
		return 2
	}
	cfg.Partitions = int32(*partitions)
	for _, f := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "httpload: -concurrency: %q is not a positive integer\n", f)
			return 2
		}
		cfg.Concurrency = append(cfg.Concurrency, n)
	}
	if *brokerProcess {
		self, err := os.Executable()
		if err == nil {
			var addr string
			var stopBroker func() error
			if addr, stopBroker, err = bench.StartBrokerProcess(ctx, self, "-serve-broker"); err == nil {
				defer func() { _ = stopBroker() }()
				cfg.Brokers = []string{addr}
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "httpload: -broker-process:", err)
			return 1
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "httpload: -cpuprofile:", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	if *memProfile != "" {
		cfg.AfterSteps = func() error {
			f, err := os.Create(*memProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			runtime.GC() // the heap as of now, not as of the last collection
			return pprof.Lookup("heap").WriteTo(f, 0)
		}
	}
	rep, err := bench.RunHTTPLoad(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpload:", err)
		return 1
	}
	if out != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "httpload:", err)
			return 1
		}
	}
	return 0
}
