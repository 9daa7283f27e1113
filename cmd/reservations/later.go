package main

// Wiring points of the subcommands that later work adds. Each function returns
// the subcommand's *command (see devCommand for the shape: settings bound to a
// Config, validation naming the setting, then a run function that only wires
// components), or nil while the subcommand does not exist: a nil command is
// not listed, and its name is an unknown subcommand (usage, exit 2).

// benchCommand will run the load and latency harness against a pipeline.
func benchCommand() *command { return nil }
