package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The other-groups check of dev and serve.
//
// Every processor decides each command of the partitions its consumer group
// assigns it. Two deployments on one topic prefix with different --group
// values are two groups: each gets every partition, and every command is
// decided twice, against two different states, with two results and two
// changelog writes. Before starting, dev and serve therefore look for any
// other consumer group on their input topic (<prefix>.commands; with the
// cart coordinator also <prefix>.cart-commands, whose group is --cart-group)
// and refuse to start when one has members consuming it or committed offsets
// on it, unless the group is named in --allow-other-groups ("*": no check).
//
// The alternative, a default --group derived from the prefix (as Kafka
// Streams derives its group from application.id), was not chosen: it does
// not catch two deployments that set different groups explicitly, and it
// would silently move an existing deployment with a custom prefix to a new
// group that starts without the old group's committed offsets.
//
// The check is made once at start, with the Kafka admin API (ListGroups,
// DescribeGroups, OffsetFetch): two deployments started in the same instant
// may both pass it, and groups the principal may not describe (Kafka ACLs)
// are invisible to it; those are logged.

// allowAllGroups as --allow-other-groups turns the check off.
const allowAllGroups = "*"

// groupCheckTimeout bounds the check.
const groupCheckTimeout = 30 * time.Second

// groupUse is a consumer group found on an input topic.
type groupUse struct {
	Group     string
	Topic     string
	State     string  // the group's state (Stable, Empty, ...), when described
	Members   int     // members subscribed to or assigned partitions of Topic
	Committed []int32 // partitions of Topic with a committed (or pending transactional) offset
}

func (u groupUse) String() string {
	var what []string
	if u.Members > 0 {
		what = append(what, fmt.Sprintf("%d member(s) consuming it", u.Members))
	}
	if len(u.Committed) > 0 {
		what = append(what, "committed offsets on partition(s) "+partitionList(u.Committed))
	}
	state := ""
	if u.State != "" {
		state = ", state " + u.State
	}
	return fmt.Sprintf("group %q (%s%s)", u.Group, strings.Join(what, " and "), state)
}

// inputGroup is one input topic and the group this process consumes it with.
type inputGroup struct {
	Topic, Group string
	// Setting names the flag of Group, for messages.
	Setting string
}

// findOtherGroups returns the consumer groups other than own that have
// members consuming topic or committed offsets on it, sorted by name, and
// notes on groups it could not inspect (authorization, a group type
// DescribeGroups does not know). err is set only when no group could be
// listed at all.
func findOtherGroups(ctx context.Context, adm *kadm.Client, topic, own string) (uses []groupUse, notes []string, err error) {
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		var se *kadm.ShardErrors
		if !errors.As(err, &se) || len(listed) == 0 {
			return nil, nil, fmt.Errorf("list consumer groups: %w", err)
		}
		notes = append(notes, fmt.Sprintf("some brokers did not list their groups: %v", err))
	}
	var names []string
	for _, g := range listed.Groups() {
		if g != own {
			names = append(names, g)
		}
	}
	if len(names) == 0 {
		return nil, notes, nil
	}
	found := map[string]*groupUse{}
	use := func(g string) *groupUse {
		if found[g] == nil {
			found[g] = &groupUse{Group: g, Topic: topic}
		}
		return found[g]
	}

	described, derr := adm.DescribeGroups(ctx, names...)
	if derr != nil && len(described) == 0 {
		notes = append(notes, fmt.Sprintf("describe groups: %v", derr))
	}
	for _, d := range described.Sorted() {
		if d.Err != nil {
			notes = append(notes, fmt.Sprintf("group %q: describe: %v", d.Group, d.Err))
			continue
		}
		members := 0
		for _, m := range d.Members {
			consumes := false
			if a, ok := m.Assigned.AsConsumer(); ok {
				for _, t := range a.Topics {
					consumes = consumes || (t.Topic == topic && len(t.Partitions) > 0)
				}
			}
			if j, ok := m.Join.AsConsumer(); ok {
				consumes = consumes || slices.Contains(j.Topics, topic)
			}
			if consumes {
				members++
			}
		}
		if members > 0 {
			u := use(d.Group)
			u.Members, u.State = members, d.State
		}
	}

	for g, r := range adm.FetchManyOffsets(ctx, names...) {
		if r.Err != nil {
			if !errors.Is(r.Err, kerr.GroupIDNotFound) {
				notes = append(notes, fmt.Sprintf("group %q: fetch committed offsets: %v", g, r.Err))
			}
			continue
		}
		var parts []int32
		for p, o := range r.Fetched[topic] {
			if (o.Err == nil && o.At >= 0) || errors.Is(o.Err, kerr.UnstableOffsetCommit) {
				parts = append(parts, p)
			}
		}
		if len(parts) > 0 {
			slices.Sort(parts)
			u := use(g)
			u.Committed = parts
			if d, ok := described[g]; ok && u.State == "" {
				u.State = d.State
			}
		}
	}

	for _, u := range found {
		uses = append(uses, *u)
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].Group < uses[j].Group })
	sort.Strings(notes)
	return uses, notes, nil
}

// checkOtherGroups refuses (an error naming the groups and what to do) when
// a consumer group other than this process's consumes one of its input
// topics and is not in allowed. brokers and opts reach the cluster. A check
// that cannot list the groups is logged as a warning and passes.
func checkOtherGroups(ctx context.Context, log *slog.Logger, s *settings, brokers []string, opts []kgo.Opt,
	inputs []inputGroup, allowed []string) error {
	if slices.Contains(allowed, allowAllGroups) {
		log.Warn("not checking for other consumer groups on the input topics (" + s.Name("allow-other-groups") + " is *)")
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, groupCheckTimeout)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.MetadataMinAge(250 * time.Millisecond)}, opts...)...)
	if err != nil {
		return fmt.Errorf("kafka admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var problems []string
	for _, in := range inputs {
		uses, notes, err := findOtherGroups(ctx, adm, in.Topic, in.Group)
		if err != nil {
			log.Warn("could not check for other consumer groups on "+in.Topic+"; starting anyway", "err", err)
			continue
		}
		for _, n := range notes {
			log.Warn("other consumer groups on "+in.Topic+": could not check one", "note", n)
		}
		for _, u := range uses {
			if slices.Contains(allowed, u.Group) {
				log.Info("another consumer group consumes "+in.Topic+", allowed by "+s.Name("allow-other-groups"),
					"group", u.Group, "members", u.Members, "committed_partitions", partitionList(u.Committed))
				continue
			}
			problems = append(problems, fmt.Sprintf("%s consumes %s, the input of this deployment's %s %q",
				u, in.Topic, in.Setting, in.Group))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("refusing to start: %s. Two deployments with different groups on one topic prefix would both decide "+
		"every command. If it is another deployment, stop it or give one of them its own --topic-prefix; if it is this "+
		"deployment under its former group name, start with that group; if it decides nothing (an archiver, a mirror) "+
		"or is abandoned (kafka-consumer-groups.sh --delete --group <name> removes it), allow it with %s "+
		"(comma-separated group names, * for no check)", strings.Join(problems, "; "), s.Name("allow-other-groups"))
}

// inputGroups are the input topics of a dev or serve process and the groups
// it consumes them with.
func (p *pipelineConfig) inputGroups() []inputGroup {
	in := []inputGroup{{Topic: p.names().Commands, Group: p.Group, Setting: "--group"}}
	if p.Carts {
		in = append(in, inputGroup{Topic: p.names().CartCommands, Group: p.CartGroup, Setting: "--cart-group"})
	}
	return in
}
