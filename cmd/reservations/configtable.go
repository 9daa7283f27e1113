package main

import (
	"context"
	"fmt"
	"io"
)

// configTableCommand prints the configuration surface as Markdown, one table
// per subcommand, for docs/CONFIGURATION.md. Hidden from the usage.
func configTableCommand() *command {
	return &command{
		name:    "config-table",
		args:    "[subcommand...]",
		summary: "print the flags and environment variables as Markdown tables",
		hidden:  true,
		help: `
Prints every setting of every subcommand (or of the named ones) as a Markdown
table: flag, environment variable, default, description. docs/CONFIGURATION.md includes
this output verbatim.`,
		setup: func() (*settings, func(context.Context, *cli, []string) int) {
			s := newSettings("config-table")
			return s, func(_ context.Context, c *cli, args []string) int {
				var cmds []*command
				for _, name := range args {
					cmd := lookupCommand(name)
					if cmd == nil {
						return c.usageFailure("config-table", fmt.Errorf("unknown subcommand %q", name))
					}
					cmds = append(cmds, cmd)
				}
				if len(cmds) == 0 {
					for _, cmd := range commands() {
						if !cmd.hidden {
							cmds = append(cmds, cmd)
						}
					}
				}
				writeConfigTables(c.stdout, cmds)
				return exitOK
			}
		},
	}
}

func writeConfigTables(w io.Writer, cmds []*command) {
	first := true
	for _, cmd := range cmds {
		s, _ := cmd.setup()
		if len(s.Settings()) == 0 {
			continue
		}
		if !first {
			fmt.Fprintln(w)
		}
		first = false
		fmt.Fprintf(w, "**`reservations %s`**\n\n", cmd.name)
		s.WriteMarkdown(w)
	}
}
