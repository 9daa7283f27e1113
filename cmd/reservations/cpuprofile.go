package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// cpuProfileEnv names a file that receives a CPU profile of the whole
// process, from start to exit (a clean exit: SIGTERM, SIGINT). It is for
// measuring the binary as a user runs it (the benchmark harness sets it); a
// running service is better profiled with `go tool pprof` against a build
// with net/http/pprof, which the admin listener does not serve.
const cpuProfileEnv = "RESERVATIONS_CPU_PROFILE"

// startCPUProfile starts the profile RESERVATIONS_CPU_PROFILE asks for and
// returns its stop; a profile that cannot start is reported on stderr and the
// program runs without it.
func startCPUProfile(stderr io.Writer) (stop func()) {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
		if err != nil {
			_ = f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "reservations: %s=%s: %v (running without a CPU profile)\n", cpuProfileEnv, path, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "reservations: CPU profile %s: %v\n", path, err)
		}
	}
}
