// Package soak is the chaos soak of the reservation pipeline (issue 6): a
// standalone kfake broker process that injects faults, three processor
// instances as separate OS processes in one consumer group, the Postgres sink,
// and a load generator with many concurrent producers (re-sent command ids, a
// non-murmur2 producer, malformed records, invalid commands, expiring holds).
// During the load, processors are killed with SIGKILL and restarted (one of
// them on a deliberately corrupted Badger directory) and Postgres is
// restarted once. After the pipeline drained, a checker reads the results,
// the changelog, the DLQ, the commands topic and Postgres, and fails on any
// breach of the contract's invariants.
//
// The package holds only the test (TestSoak) and its helpers; the test binary
// re-executes itself as the broker and processor child processes.
//
//	make soak-short   # ~1 minute, also part of `make test`
//	make soak         # SOAK=full: >= 1,000,000 commands, >= 20 SIGKILLs
//
// Sizes can be overridden with SOAK_COMMANDS, SOAK_KILLS and SOAK_SECONDS (the
// time the load is spread over); SOAK_SEED repeats the load, the fault choices
// and the kill targets of an earlier run (the report's first line names the
// seed; timing still differs); SOAK_DIR keeps the logs and data of a run
// (broker, processors, sink) in a new folder under it.
//
// The invariants are listed in report_test.go; the report names each with its
// result and prints figures (kills and the recovery after each, faults
// injected, duplicates absorbed, commands forwarded, DLQ records). Its last
// line is the summary, e.g. "soak: 30000 commands, 6 kills, 23 faults, 0
// violations".
package soak
