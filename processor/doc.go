// Package processor decides reservation commands exactly once.
//
// # The pure cores
//
// sku.Core.Apply(state, input, now) -> Outputs (package processor/sku) is the
// whole contract: validation, idempotency by command_id, stock arithmetic,
// lazy expiry, low-stock notices. It reads a State, never writes it, never
// does I/O and never reads a clock; it returns the results and the entity
// changes (the changelog records). The scenario files in
// processor/sku/testdata/scenarios drive it directly. processor/cart is the
// cart coordinator's core. This package is the loop that runs them.
//
// # The partition loop
//
// A Processor is one member of a Kafka consumer group (cooperative-sticky) on
// the commands topic. Every assigned partition gets its own goroutine (a
// partition): it owns the partition's Badger store, the pending writes of the
// open transaction, and the expiry timers. Commands of a partition are applied
// one after the other in offset order, so there are no locks and no races on a
// SKU: every SKU lives on exactly one partition.
//
// # One transaction, a barrier per dispatch
//
// The main loop owns one transactional client (kgo.GroupTransactSession, with
// a transactional id that is stable per instance). Each transaction:
//
//  1. polls records, groups them by partition and hands each running partition
//     its records and the clock (now), then waits for all of them: the
//     barrier. Partitions decide in parallel and produce results, changelog
//     records, DLQ records and forwarded commands into the transaction;
//  2. without a linger (the default), takes what is already buffered before
//     each dispatch, up to MaxBatch records or CommitInterval: records that
//     were waiting join the transaction, and when nothing more is buffered
//     (or MaxBatch or CommitInterval is reached) that dispatch is the last,
//     and its partitions seal in the same job (one hand-off each instead of
//     two). Records that arrive during it wait for the next transaction,
//     which begins as soon as this one ends: load forms larger transactions
//     (what piles up during a dispatch and an end) and idle traffic small
//     ones (low latency). With a linger, the loop waits up to Linger for
//     more after each dispatch and seals after the loop;
//  3. has every partition not sealed yet produce the changelog records of
//     its pending writes (seal): one record per changed key, its last value,
//     so a hot SKU's stock entity is written once per transaction, not once
//     per command. A commit refuses changes that were never sealed. Then it
//     flushes and checks every produce: any failure aborts;
//  4. ends the transaction, which commits the consumed offsets with the
//     outputs (KIP-447: the group generation fences zombies);
//  5. on commit, each partition moves its pending changes to its cache and
//     hands their changelog values, with the changelog offset they reach, to
//     its store writer (checkpoint.go): one background write at a time, at
//     most one per 50 ms, puts everything committed since the last one into
//     Badger in ONE write (data and offset together), so Badger's work is off
//     the partition's critical path, small transactions share a write, and a
//     key changed by many transactions is written once per store write; on
//     abort, it drops them (and puts popped timers back), and the session
//     rewinds to the committed offsets so the records are decided again.
//
// Badger therefore only ever holds state of committed transactions: it can be
// behind the changelog (a crash before the background write ended), never
// ahead of it, and never holds aborted writes (a store written before the
// commit would keep the writes of a transaction that then aborted). Being
// behind is the case every restore handles: the changelog tail from the
// store's offset brings it up to date. A clean stop waits for the store to
// have every commit before closing it.
//
// A partition reads state through its pending writes, a cache of decoded
// entities, the committed values its store writer has not written yet, and
// the store; a key filter (keyfilter.go: the hashes of every key
// the store may hold) answers "certainly absent" for the keys a new command
// asks for (its command/<id> and reservation keys) without a Badger read.
//
// Why one transaction for all partitions rather than a producer per partition:
// a transactional producer per partition (Kafka Streams' old EOS-v1) costs a
// producer, a transaction coordinator round trip and markers per partition per
// commit; one per instance (EOS-v2) amortises them over every partition. The
// price is that a rebalance aborts the open transaction of all partitions (the
// session aborts on any revoke): that is cheap here because nothing reached
// Badger and the records are simply decided again.
//
// # Rebalances
//
// A revoked or lost partition stops on the group goroutine before the
// rebalance goes on (its goroutine exits; an open transaction that wrote for
// it aborts); the balancer reports every generation's whole assignment, so a
// revoke the transact session does not pass on still stops it. Assignments
// pause fetching and are applied by the main loop between transactions. Every
// transaction ends through the session and commits the offsets of every
// partition it wrote for, so the broker fences a zombie by its generation. A
// stopped partition keeps its store folder (deleted after StateCleanupDelay):
// if the partition comes back, only the changelog tail written meanwhile is
// replayed, unless the store was away longer than half the changelog's
// delete.retention.ms. A record of a partition that is not running aborts the
// transaction rather than being dropped. docs/MEMBERSHIP.md has the rules.
//
// # Restore
//
// A newly assigned partition is restored before it is resumed: the store is
// opened (wiped if unreadable, of another changelog topic id, ahead of the
// changelog end or behind its start), then the changelog partition is read
// read_committed from the store's offset to its end, once no transaction is
// open on it (so a previous owner's pending commit cannot be missed). A full
// restore is bulk-loaded with Badger's StreamWriter; a tail is written in
// coalesced chunks. The expiry timers are rebuilt from the active reservations
// in the store: they are derived state, never the source of truth.
//
// # Standby replicas
//
// With Config.StandbyReplicas = N, the group protocol is the standby
// balancer's (balancer.go: franz-go's cooperative-sticky plan, then partitions
// nobody claims go to the warmest copy and each partition gets N standbys off
// its owner). A standby (standby.go) restores a store with the rules above and
// tails the changelog read_committed into it; it is never queryable and never
// writes. The main loop stops it, closing the store, before the partition's
// owner starts on the same folder, which then replays only the tail.
// docs/STANDBY.md has the whole story.
//
// # Timers and the sweep
//
// Each partition keeps a min-heap of active reservations' expires_at. Due
// timers fire at the start of every dispatch (so an expired hold never counts
// against availability) and the main loop wakes itself for the earliest one,
// at most TimerTick later, even without traffic. A stale entry is harmless:
// Core.Expire checks the state. A sweeper walks the store in small steps and
// tombstones decided commands and terminal reservations past the dedupe
// window, which keeps the compacted changelog bounded.
//
// # Idempotency
//
// Every decision is stored as a changelog entity command/<command_id> (an
// extension of contract v1, see schemas/README.md) holding the original
// result, so duplicates are answered identically after restarts and partition
// moves, for the dedupe window.
//
// # Roles: the SKU processor and the cart coordinator
//
// The same loop runs in two roles (Config.Role), behind the role and
// partitionRole interfaces of role.go; newRole is the only place that tells
// them apart. skurole.go decides the contract's commands with Core and keeps
// the expiry timers. cartrole.go is the cart coordinator of the cart extension
// (schemas/README.md (i)-(k)): its input is the cart-commands topic, its
// results go to cart-results, its state to its own cart-changelog; the pure
// core is processor/cart. Everything else (transactions, barrier, restore,
// rebalances, sweep, poison commands) is the loop's and knows neither domain:
//
//	processor.go  the main loop: poll, dispatch, barrier, transaction, group events
//	partition.go  a partition's goroutine: store, cache, pending writes, commit/abort
//	cache.go      a partition's cache of decoded committed state, bounded in bytes
//	checkpoint.go committed state written to Badger behind the commits
//	restore.go    store + changelog -> ready partition; the stale-store rules
//	sweep.go      tombstones of what the role forgets
//	poison.go     commands whose decision the broker rejects
//	skurole.go    the SKU role        cartrole.go  the cart role
//	replies.go    reply_to=replies: the decision copied to the replies partition named
//
// A partition gets a partitionEnv (configuration, topics, layout, metrics,
// produce), not its Processor. A cart command becomes a saga: the coordinator produces
// per-SKU commands (reply_to=cart, deterministic ids) to the commands topic in
// the transaction that records the saga's state; the SKU processor decides
// each one and, in its own transaction, also writes the decision to the
// cart-commands partition the cart_id hashes to, where the coordinator that
// owns the cart reads it as a line result. Both hops are exactly once, so a
// crash of either process anywhere in the saga resumes it from the
// changelogs, and every per-SKU command is decided once.
package processor
