// Package soak is the chaos soak of the reservation pipeline: a
// standalone kfake broker process that injects faults, three processor
// instances as separate OS processes in one consumer group (each also running
// the cart coordinator in a second group), the Postgres sink, and a load
// generator with many concurrent producers (re-sent command ids, a non-murmur2
// producer, malformed records, invalid commands, expiring holds, and cart
// commands whose sagas span several SKUs).
//
// The load runs in traffic phases separated by quiet periods in which no
// command is sent while holds with short TTLs expire. During the traffic,
// processors are killed with SIGKILL and restarted (one of them on a
// deliberately corrupted Badger directory), and Postgres is restarted once.
// Processors are frozen with SIGSTOP until their groups expelled them (past
// the session timeout), then continued: zombies, half of them in a quiet
// period with holds coming due. The changelogs run with a 1-minute dedupe
// window and a 15 s delete.retention.ms, so tombstones are written and
// compaction (the broker's, triggered in every quiet period) removes them; a
// processor is stopped, the changelogs compacted after the tombstones written
// meanwhile aged past delete.retention.ms, and the processor restarted on its
// old folder (a stale-folder rejoin, MEMBERSHIP.md rule 3).
//
// After the pipeline drained, a checker reads the results, the cart results,
// the changelog (read while the soak ran, as compaction removes records), the
// DLQ, the commands topic, the coordinators' changelog and Postgres, and the
// processors' logs (no partition ran on two instances at once; stores of a
// stale folder rebuilt in full), and fails on any breach of the contract's
// invariants.
//
// The package holds only the test (TestSoak), its helpers and tests of the
// checks themselves (fed fabricated breaches); the test binary re-executes
// itself as the broker and processor child processes.
//
//	make soak-short   # ~1.5 minutes, also part of `make test`
//	make soak         # SOAK=full: >= 1,000,000 commands, >= 20 SIGKILLs
//
// Sizes can be overridden with SOAK_COMMANDS, SOAK_KILLS, SOAK_QUIET (quiet
// periods), SOAK_FREEZES, SOAK_STALE (stale-folder rejoins), SOAK_CARTS
// (cart.reserve commands; 0 runs no cart coordinator) and SOAK_SECONDS (the
// traffic time the load is spread over); SOAK_SEED repeats the load, the fault
// choices and the kill targets of an earlier run (the report's first line
// names the seed; timing still differs); SOAK_DIR keeps the logs and data of a
// run (broker, processors, sink) in a new folder under it.
//
// The invariants are listed in report_test.go; the report names each with its
// result and prints figures (kills, freezes and the recovery after each,
// stale rejoins and how their stores were restored, compactions, carts,
// faults injected, duplicates absorbed, commands forwarded, DLQ records). Its
// last line is the summary, e.g. "soak: 30000 commands, 6 kills, 23 faults, 2
// quiet periods, 2 freezes, 1 stale rejoins, 3 compactions, 260 cart
// commands, 0 violations".
package soak
