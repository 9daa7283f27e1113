package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/reservations/reservations/topics"
)

// runBroker is the broker child: a single-node kfake cluster on a fixed
// loopback port with its log in DataDir. Signals: SIGUSR1 starts the fault
// injector, SIGUSR2 stops it and prints "faults <json faultReport>", SIGHUP
// compacts every compacted topic (kfake's Cluster.Compact: superseded records
// and tombstones older than the topic's delete.retention.ms go; the last batch
// of a partition stays), reloads the cluster from its data folder (see
// below) and prints "compacted <milliseconds it took>", SIGTERM closes the
// cluster.
//
// Compact runs on the cluster's loop, so no request is served while it runs.
// Unlike Kafka's cleaner (which stops at the first unstable offset) it also
// compacts records of open transactions: a committed record superseded by
// one of an open transaction that later aborts would be lost (reproduced:
// TestKfakeCompactsOpenTransactions). So the broker compacts only when no
// transaction is open on the compacted topics, and makes that check and the
// compaction atomic for writers: produces to them are refused (retriable
// NOT_ENOUGH_REPLICAS) from before the check until the compaction ends. A
// produce the stopped processes sent just before being stopped, still
// unread by the broker, used to land between the chaos's own check and the
// compaction (seen on a loaded machine: a cart's committed saga state lost).
// Otherwise it prints "compacted skipped: <why>".
func runBroker(c childConfig) int {
	newCluster := func() (*kfake.Cluster, error) {
		return kfake.NewCluster(
			kfake.NumBrokers(1),
			kfake.Ports(c.Port),
			kfake.DataDir(c.DataDir),
			kfake.GroupMinSessionTimeout(time.Second),
			kfake.WithLogger(kfake.BasicLogger(os.Stderr, kfake.LogLevelWarn)),
		)
	}
	cl, err := newCluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		return 2
	}
	defer func() {
		if cl != nil {
			cl.Close()
		}
	}()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP, syscall.SIGTERM)
	fmt.Println("ready", cl.ListenAddrs()[0])

	inj := &injector{cl: cl, names: topics.NewNames(c.Prefix), rng: rand.New(rand.NewPCG(c.Seed, 1))}
	var stop chan struct{}
	var done chan faultReport
	for s := range sigs {
		switch s {
		case syscall.SIGHUP:
			began := time.Now()
			fmt.Fprintf(os.Stderr, "%s soak: compacting\n", began.Format("15:04:05.000"))
			if open := compactQuiescent(cl, inj.names); open != "" {
				fmt.Fprintf(os.Stderr, "%s soak: not compacted: %s\n", time.Now().Format("15:04:05.000"), open)
				fmt.Println("compacted skipped:", open)
				continue
			}
			// Reload the cluster from its data folder, the compacted topics'
			// partition snapshots removed: kfake's compaction can drop an abort
			// marker while still reporting the aborted transaction, which hides
			// that producer's later committed batches from read_committed
			// readers (TestKfakeCompactionHidesLaterCommits); a close saves
			// that stale index in each partition's snapshot.json, and only a
			// replay of the log rebuilds it (TestKfakeReloadRebuildsAbortedIndex).
			// The produce guard stays until the close. Clients see a short
			// broker restart (no transaction is open).
			if err := inj.replace(func() (*kfake.Cluster, error) {
				cl.Close()
				cl = nil // closed: the deferred close skips it if the reload fails
				if err := dropSnapshots(c.DataDir, inj.names); err != nil {
					return nil, err
				}
				next, err := newCluster()
				if err == nil {
					cl = next
				}
				return next, err
			}); err != nil {
				fmt.Fprintln(os.Stderr, "kfake reload after compaction:", err)
				return 2
			}
			fmt.Fprintf(os.Stderr, "%s soak: compacted in %s\n", time.Now().Format("15:04:05.000"), time.Since(began))
			fmt.Println("compacted", time.Since(began).Milliseconds())
		case syscall.SIGUSR1:
			if stop == nil {
				stop, done = make(chan struct{}), make(chan faultReport, 1)
				go func() { done <- inj.run(stop) }()
			}
		case syscall.SIGUSR2, syscall.SIGTERM:
			fmt.Fprintf(os.Stderr, "%s soak: %s\n", time.Now().Format("15:04:05.000"), s)
			rep := faultReport{}
			if stop != nil {
				close(stop)
				rep = <-done
				stop = nil
			}
			js, _ := json.Marshal(rep)
			fmt.Println("faults", string(js))
			if s == syscall.SIGTERM {
				return 0
			}
		}
	}
	return 0
}

// faultReport counts the faults the injector installed and the requests they
// failed, per fault kind.
type faultReport struct {
	Installed int
	Injected  int
	Kinds     map[string][2]int // kind -> {installed, injected}
}

// String lists the kinds, e.g. "EndTxn/COORDINATOR_NOT_AVAILABLE 2/3".
func (r faultReport) String() string {
	var kinds []string
	for k, v := range r.Kinds {
		kinds = append(kinds, fmt.Sprintf("%s %d/%d", k, v[1], v[0]))
	}
	sort.Strings(kinds)
	return strings.Join(kinds, ", ")
}

// injector installs a random kfake fault every 1-3 s: errors on Produce (the
// processor's outputs and forwards), Fetch, TxnOffsetCommit, AddOffsetsToTxn
// and EndTxn, each failing 1-3 requests.
type injector struct {
	mu    sync.Mutex // guards cl (replaced when the broker reloads)
	cl    *kfake.Cluster
	names topics.Names
	rng   *rand.Rand
}

type faultKind struct {
	name  string
	fault kfake.Fault
}

func (in *injector) kinds() []faultKind {
	n := in.names
	k := func(name string, f kfake.Fault) faultKind { return faultKind{name, f} }
	return []faultKind{
		k("Produce/results/NOT_LEADER", kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: n.Results, Err: kerr.NotLeaderForPartition}),
		k("Produce/changelog/UNKNOWN_SERVER_ERROR", kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: n.Changelog, Err: kerr.UnknownServerError}),
		k("Produce/changelog/NOT_ENOUGH_REPLICAS", kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: n.Changelog, Err: kerr.NotEnoughReplicas}),
		k("Produce/commands/NOT_LEADER", kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: n.Commands, Err: kerr.NotLeaderForPartition}),
		k("Fetch/commands/NOT_LEADER", kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: n.Commands, Err: kerr.NotLeaderForPartition}),
		k("Fetch/changelog/NOT_LEADER", kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: n.Changelog, Err: kerr.NotLeaderForPartition}),
		k("TxnOffsetCommit/COORDINATOR_LOAD_IN_PROGRESS", kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Err: kerr.CoordinatorLoadInProgress}),
		k("AddOffsetsToTxn/COORDINATOR_NOT_AVAILABLE", kfake.Fault{Keys: []kmsg.Key{kmsg.AddOffsetsToTxn}, Err: kerr.CoordinatorNotAvailable, TopLevel: true}),
		k("EndTxn/COORDINATOR_NOT_AVAILABLE", kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.CoordinatorNotAvailable, TopLevel: true}),
		k("EndTxn/UNKNOWN_SERVER_ERROR", kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.UnknownServerError, TopLevel: true}),
	}
}

// run injects faults until stop is closed, then removes those still
// installed and reports.
func (in *injector) run(stop chan struct{}) faultReport {
	type installed struct {
		kind string
		h    *kfake.FaultHandle
	}
	var all []installed
	kinds := in.kinds()
	for {
		select {
		case <-stop:
			rep := faultReport{Kinds: map[string][2]int{}}
			for _, f := range all {
				f.h.Remove()
				v := rep.Kinds[f.kind]
				v[0]++
				v[1] += f.h.Hits()
				rep.Kinds[f.kind] = v
				rep.Installed++
				rep.Injected += f.h.Hits()
			}
			return rep
		case <-time.After(time.Second + time.Duration(in.rng.Int64N(int64(2*time.Second)))):
		}
		k := kinds[in.rng.IntN(len(kinds))]
		f := k.fault
		f.Count = 1 + in.rng.IntN(3)
		in.mu.Lock()
		all = append(all, installed{k.name, in.cl.Fault(f)})
		in.mu.Unlock()
	}
}

// compactQuiescent compacts the cluster if no transaction is open on the
// compacted topics (last stable offset == high watermark on every partition),
// with produces to them refused meanwhile; it returns why it did not ("" when
// it compacted).
func compactQuiescent(cl *kfake.Cluster, n topics.Names) string {
	compacted := []string{n.Changelog, n.CartChangelog}
	var guards []kfake.Fault
	for _, t := range compacted {
		guards = append(guards, kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: t, Err: kerr.NotEnoughReplicas, Count: -1})
	}
	h := cl.Fault(guards...)
	compactedOK := false
	defer func() {
		if !compactedOK {
			h.Remove() // after a compaction the guard stays until the cluster closes
		}
	}()
	adm, err := kgo.NewClient(kgo.SeedBrokers(cl.ListenAddrs()...))
	if err != nil {
		return fmt.Sprintf("admin client: %v", err)
	}
	defer adm.Close()
	ka := kadm.NewClient(adm)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hw, err := ka.ListEndOffsets(ctx, compacted...)
	if err == nil {
		err = hw.Error()
	}
	if err != nil {
		return fmt.Sprintf("list end offsets: %v", err)
	}
	lso, err := ka.ListCommittedOffsets(ctx, compacted...)
	if err == nil {
		err = lso.Error()
	}
	if err != nil {
		return fmt.Sprintf("list last stable offsets: %v", err)
	}
	var open []string
	hw.Each(func(o kadm.ListedOffset) {
		if l, ok := lso.Lookup(o.Topic, o.Partition); !ok || l.Offset != o.Offset {
			open = append(open, fmt.Sprintf("%s/%d", o.Topic, o.Partition))
		}
	})
	if len(open) > 0 {
		sort.Strings(open)
		return "a transaction was open on " + strings.Join(open, ", ")
	}
	cl.Compact()
	compactedOK = true
	return ""
}

// dropSnapshots removes the snapshot.json of every partition of the
// compacted topics under the broker's data folder, so that the next start
// replays their logs.
func dropSnapshots(dataDir string, n topics.Names) error {
	for _, t := range []string{n.Changelog, n.CartChangelog} {
		snaps, err := filepath.Glob(filepath.Join(dataDir, "partitions", t+"-*", "snapshot.json"))
		if err != nil {
			return err
		}
		for _, s := range snaps {
			if err := os.Remove(s); err != nil {
				return err
			}
		}
	}
	return nil
}

// replace swaps the injector's cluster for the one reload returns (after
// closing the old one), holding the lock so that no fault is installed on a
// closed cluster meanwhile; the faults installed on the old cluster are gone
// with it (their hits count).
func (in *injector) replace(reload func() (*kfake.Cluster, error)) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	next, err := reload()
	if err != nil {
		return err
	}
	in.cl = next
	return nil
}
