// Command loadgen is the load generator of the benchmark harness's binary
// measurement (package internal/bench), and the broker it runs against, each
// in its own process. Wiring only: flags -> bench.LoadConfig -> bench.RunLoad.
//
//	loadgen broker [-port 0]        a kfake broker on 127.0.0.1; prints "ready <host:port>"
//	loadgen load -brokers host:port -kind closed -workload uniform -clients 64 -ops 20000 -tag s1
//	loadgen passthrough -brokers host:port   the same-layout pass-through (see bench.RunPassthrough); prints "ready <host:port of its /metrics>"
//
// load prints one JSON line: the step (throughput, latency percentiles,
// outcomes) and the CPU seconds of the processes named with -cpu-pid.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reservations/reservations/internal/bench"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen broker|load|passthrough [flags] (-h for the flags)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("loadgen "+os.Args[1], flag.ExitOnError)
	var err error
	switch os.Args[1] {
	case "broker":
		port := fs.Int("port", 0, "port on 127.0.0.1 (0: any free port)")
		_ = fs.Parse(os.Args[2:])
		err = bench.RunBroker(ctx, *port, os.Stdout, os.Stdin)
	case "load":
		var lc bench.LoadConfig
		lc.RegisterFlags(fs)
		_ = fs.Parse(os.Args[2:])
		err = bench.RunLoad(ctx, lc, os.Stdout)
	case "passthrough":
		var pc bench.PassConfig
		brokers := fs.String("brokers", "", "seed broker host:port")
		fs.StringVar(&pc.TopicPrefix, "topic-prefix", "bench-pt", "topics <prefix>.commands, .results, .changelog (created beforehand)")
		fs.IntVar(&pc.ChangelogPerCommand, "changelog-per-command", 3, "changelog records produced per command")
		fs.IntVar(&pc.ResultBytes, "result-bytes", 0, "size of each result record (0: a copy of the command)")
		fs.Func("changelog-bytes", "comma-separated sizes of the changelog records of one command (replaces -changelog-per-command copies)", func(v string) error {
			for _, f := range strings.Split(v, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || n <= 0 {
					return fmt.Errorf("changelog-bytes: %q is not a positive size", f)
				}
				pc.ChangelogBytes = append(pc.ChangelogBytes, n)
			}
			return nil
		})
		fs.DurationVar(&pc.CommitInterval, "commit-interval", 50*time.Millisecond, "longest time one transaction collects records")
		fs.IntVar(&pc.MaxBatch, "max-batch", 5000, "most records per transaction")
		_ = fs.Parse(os.Args[2:])
		pc.Brokers = []string{*brokers}
		err = bench.RunPassthrough(ctx, pc, os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown mode %q: want broker, load or passthrough\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
