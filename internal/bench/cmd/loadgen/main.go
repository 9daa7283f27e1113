// Command loadgen is the load generator of the benchmark harness's binary
// measurement (package internal/bench), and the broker it runs against, each
// in its own process. Wiring only: flags -> bench.LoadConfig -> bench.RunLoad.
//
//	loadgen broker [-port 0]        a kfake broker on 127.0.0.1; prints "ready <host:port>"
//	loadgen load -brokers host:port -kind closed -workload uniform -clients 64 -ops 20000 -tag s1
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
	"syscall"

	"github.com/reservations/reservations/internal/bench"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen broker|load [flags] (-h for the flags)")
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
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown mode %q: want broker or load\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
