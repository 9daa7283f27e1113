// Command reservations runs the inventory reservation pipeline.
//
//	reservations dev            embedded Kafka (kfake) + processor + admin HTTP, for a laptop
//	reservations serve          processor + admin HTTP against a real Kafka cluster
//	reservations send <type>    send one command and wait for its result
//	reservations sink           the Postgres snapshot of the changelog, alone
//	reservations verify         check the changelog's invariants and Postgres against it
//	reservations audit          print the audit trail of a SKU, reservation, cart or order
//	reservations replay         rebuild a processor's Badger folder or the Postgres snapshot
//	reservations version        print the version, commit and build date
//
// This package is wiring only: flags and environment -> Config structs, slog,
// a Prometheus registry, signal.NotifyContext, an errgroup of components, and
// a non-zero exit with a clear message. Every flag --some-flag is also read
// from RESERVATIONS_SOME_FLAG (or from a subcommand-prefixed variable where
// the meaning differs between subcommands, e.g. RESERVATIONS_SINK_HTTP_ADDR,
// and for secrets from the file named by RESERVATIONS_SOME_FLAG_FILE);
// `reservations config-table` prints all of them.
//
// Exit codes: 0 success; 1 runtime failure (for send: the command was
// rejected; for verify: a mismatch); 2 invalid usage or configuration; 3 send
// got no result (timeout or error), verify reached no verdict.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1 // runtime failure; send: rejected
	exitUsage    = 2 // invalid usage or configuration
	exitNoResult = 3 // send: timeout or error before a result arrived
	// exitIncomplete: verify could not reach a verdict (Kafka or Postgres
	// unreachable, the sink behind the changelog after --wait).
	exitIncomplete = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the process the default way.
		<-ctx.Done()
		stop()
	}()
	stopProfile := startCPUProfile(os.Stderr)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

// run is the whole program without the process: tests call it in-process.
// It returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return (&cli{stdout: stdout, stderr: stderr, lookupEnv: os.LookupEnv}).run(ctx, args)
}

// cli is the process environment a subcommand sees.
type cli struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	// jsonLog is the subcommand's logger when it logs JSON (--log-format
	// json): fail then reports through it.
	jsonLog *slog.Logger
}

// command is one subcommand.
type command struct {
	name    string
	args    string // positional arguments, for the usage line
	summary string // one line, for the command list
	help    string // the long help text (-h)
	hidden  bool
	// setup registers the subcommand's settings, bound to a fresh config, and
	// returns them with the function that runs the subcommand once they are
	// parsed (it receives the positional arguments).
	setup func() (*settings, func(ctx context.Context, c *cli, args []string) int)
}

// commands lists the subcommands in usage order. A nil entry is a wiring
// point whose subcommand does not exist yet (see later.go).
func commands() []*command {
	all := []*command{
		devCommand(),
		serveCommand(),
		sendCommand(),
		sinkCommand(),
		verifyCommand(),
		auditCommand(),
		replayCommand(),
		versionCommand(),
		configTableCommand(),
	}
	out := all[:0]
	for _, c := range all {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

func lookupCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (c *cli) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		c.usage(c.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 {
			if cmd := lookupCommand(args[1]); cmd != nil {
				s, _ := cmd.setup()
				cmd.writeHelp(c.stdout, s)
				return exitOK
			}
			fmt.Fprintf(c.stderr, "reservations: unknown subcommand %q\n\n", args[1])
			c.usage(c.stderr)
			return exitUsage
		}
		c.usage(c.stdout)
		return exitOK
	}
	if name == "--version" || name == "-version" {
		name = "version"
	}
	cmd := lookupCommand(name)
	if cmd == nil {
		fmt.Fprintf(c.stderr, "reservations: unknown subcommand %q\n\n", name)
		c.usage(c.stderr)
		return exitUsage
	}
	s, runCmd := cmd.setup()
	pos, err := s.Parse(args[1:], c.lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		cmd.writeHelp(c.stdout, s)
		return exitOK
	}
	if err != nil {
		return c.usageFailure(cmd.name, err)
	}
	return runCmd(ctx, c, pos)
}

// usageFailure reports a usage or configuration error and returns exitUsage.
func (c *cli) usageFailure(cmd string, err error) int {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		fmt.Fprintf(c.stderr, "reservations %s: %v\n", cmd, e)
	}
	fmt.Fprintf(c.stderr, "Run 'reservations %s -h' for usage.\n", cmd)
	return exitUsage
}

// fail reports a runtime error and returns code: a line "reservations
// <cmd>: <error>", or with --log-format json one error record with the
// fields err and exit_code.
func (c *cli) fail(cmd string, code int, err error) int {
	if c.jsonLog != nil {
		c.jsonLog.Error("reservations "+cmd+" failed", "err", err.Error(), "exit_code", code)
		return code
	}
	fmt.Fprintf(c.stderr, "reservations %s: %v\n", cmd, err)
	return code
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `reservations: the inventory reservation stream processor (Kafka, exactly-once).

Usage:
  reservations <subcommand> [flags]

Subcommands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, cmd := range commands() {
		if !cmd.hidden {
			fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
		}
	}
	tw.Flush()
	fmt.Fprint(w, `
Run 'reservations <subcommand> -h' for its flags. Every flag --some-flag can
also be set with the environment variable RESERVATIONS_SOME_FLAG (the sink's
--http-addr: RESERVATIONS_SINK_HTTP_ADDR), and secrets (passwords, tokens,
DSNs) with RESERVATIONS_SOME_FLAG_FILE naming a file that holds them; a flag on
the command line wins over the environment.
`)
}

func (cmd *command) writeHelp(w io.Writer, s *settings) {
	fmt.Fprintf(w, "Usage: reservations %s [flags]\n\n", strings.TrimSpace(cmd.name+" "+cmd.args))
	fmt.Fprintln(w, strings.TrimSpace(cmd.help))
	fmt.Fprintln(w)
	s.WriteHelp(w)
}
