package processor

import (
	"cmp"
	"encoding/json"
	"slices"
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// standbyProtocol is the group protocol of standbyBalancer. Members with
// StandbyReplicas > 0 offer it first and cooperative-sticky second, so a group
// in a rolling upgrade (some members without it) keeps cooperative-sticky until
// every member offers it.
const standbyProtocol = "reservations-standby-v1"

// coopSticky is franz-go's cooperative-sticky balance: standbyBalancer runs it
// unchanged (stickiness, balance, and the cooperative adjustment that keeps a
// moving partition unassigned until its owner revoked it), then places what
// it left free and the standbys.
var coopSticky = kgo.CooperativeStickyBalancer().(kgo.ConsumerBalancerBalance)

// memberUserData is what a member advertises in its JoinGroup metadata: the
// next changelog offset of every local store it can vouch for (standby copies
// and stores of partitions it stopped owning, not stale).
type memberUserData struct {
	V    int             `json:"v"`
	Warm map[int32]int64 `json:"warm,omitempty"`
}

// syncUserData is what the leader adds to a member's SyncGroup assignment:
// the partitions the member keeps a standby copy of.
type syncUserData struct {
	V       int     `json:"v"`
	Standby []int32 `json:"standby,omitempty"`
}

// standbyBalancer is a cooperative kgo.GroupBalancer for the commands topic:
// the cooperative-sticky plan, except that (a) a partition nobody owns (its
// owner died, left, or revoked it in the first cooperative round) goes to a
// member with the warmest copy among those the sticky plan gives a new
// partition, so the counts (the balance) do not change, and (b) every
// partition gets min(replicas, members-1) standbys on members that neither own
// it nor still claim it, preferring warm copies, spread evenly.
type standbyBalancer struct {
	topic    string
	replicas int
	// warm returns this member's warm stores for JoinGroupMetadata (may be nil).
	warm func() map[int32]int64
}

func (*standbyBalancer) ProtocolName() string { return standbyProtocol }
func (*standbyBalancer) IsCooperative() bool  { return true }

// JoinGroupMetadata is cooperative-sticky's (version 3, owned partitions and
// generation) with the warm stores as user data.
func (b *standbyBalancer) JoinGroupMetadata(interests []string, current map[string][]int32, generation int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 3
	meta.Topics = interests
	meta.Generation = generation
	for topic, parts := range current {
		o := kmsg.NewConsumerMemberMetadataOwnedPartition()
		o.Topic, o.Partitions = topic, parts
		meta.OwnedPartitions = append(meta.OwnedPartitions, o)
	}
	sort.Slice(meta.OwnedPartitions, func(i, j int) bool { return meta.OwnedPartitions[i].Topic < meta.OwnedPartitions[j].Topic })
	ud := memberUserData{V: 1}
	if b.warm != nil {
		ud.Warm = b.warm()
	}
	meta.UserData, _ = json.Marshal(ud) // a map of numbers always encodes (sorted keys: deterministic)
	return meta.AppendTo(nil)
}

func (*standbyBalancer) ParseSyncAssignment(a []byte) (map[string][]int32, error) {
	return kgo.ParseConsumerSyncAssignment(a)
}

// parseStandbys returns the standby partitions of a SyncGroup assignment; none
// when it has no user data of ours (cooperative-sticky was chosen).
func parseStandbys(a []byte) []int32 {
	var ka kmsg.ConsumerMemberAssignment
	if err := ka.ReadFrom(a); err != nil || len(ka.UserData) == 0 {
		return nil
	}
	var ud syncUserData
	if err := json.Unmarshal(ka.UserData, &ud); err != nil || ud.V != 1 {
		return nil
	}
	return ud.Standby
}

func (b *standbyBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	cb, err := kgo.NewConsumerBalancer(b, members)
	if err != nil {
		return nil, nil, err
	}
	return cb, cb.MemberTopics(), nil
}

// Balance implements kgo.ConsumerBalancerBalance.
func (b *standbyBalancer) Balance(cb *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	into := coopSticky.Balance(cb, topics)
	bp, ok := into.(*kgo.BalancePlan)
	if !ok {
		return into
	}
	plan := bp.AsMemberIDMap()
	var ms []balanceMember
	cb.EachMember(func(m *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		bm := balanceMember{id: m.MemberID}
		var ud memberUserData
		if json.Unmarshal(meta.UserData, &ud) == nil && ud.V == 1 {
			bm.warm = ud.Warm
		}
		for _, o := range meta.OwnedPartitions {
			if o.Topic == b.topic {
				bm.claims = append(bm.claims, o.Partitions...)
			}
		}
		ms = append(ms, bm)
	})
	owned := make([][]int32, len(ms))
	for i, m := range ms {
		owned[i] = plan[m.id][b.topic]
	}
	owned, standby := place(ms, owned, topics[b.topic], b.replicas)
	for i, m := range ms {
		if len(owned[i]) > 0 {
			plan[m.id][b.topic] = owned[i]
		} else {
			delete(plan[m.id], b.topic)
		}
	}
	return &standbyPlan{plan: plan, standby: standbyByID(ms, standby)}
}

func standbyByID(ms []balanceMember, standby [][]int32) map[string][]int32 {
	out := make(map[string][]int32, len(ms))
	for i, m := range ms {
		out[m.id] = standby[i]
	}
	return out
}

// balanceMember is one member as place sees it.
type balanceMember struct {
	id     string
	warm   map[int32]int64 // partition -> next offset of its local copy
	claims []int32         // partitions it says it owns (JoinGroup)
}

// acceptableRecoveryLag is how many changelog records a copy may be behind the
// warmest one and still count as caught up when a partition is placed (Kafka
// Streams' acceptable.recovery.lag default).
const acceptableRecoveryLag = 10_000

// offset is the member's warm offset of p, -1 without a copy.
func (m balanceMember) offset(p int32) int64 {
	if o, ok := m.warm[p]; ok {
		return o
	}
	return -1
}

// place rearranges the partitions nobody claims among the members the sticky
// plan gave them to (same count per member) so that each goes to the warmest
// copy available, and picks the standbys. owned[i] is member i's planned
// partitions; it returns the new owned and each member's standbys, sorted.
func place(ms []balanceMember, owned [][]int32, partitions int32, replicas int) ([][]int32, [][]int32) {
	claimed := make(map[int32][]int, partitions)
	for i, m := range ms {
		for _, p := range m.claims {
			claimed[p] = append(claimed[p], i)
		}
	}
	// (a) Free partitions: planned, but claimed by nobody (a claimed one may
	// still run on its claimant, and must not move without a revoke).
	slots := make([]int, len(ms))
	var free []int32
	sticky := map[int32]int{}
	out := make([][]int32, len(ms))
	planned := 0
	for i := range ms {
		planned += len(owned[i])
		for _, p := range owned[i] {
			if len(claimed[p]) == 0 {
				free = append(free, p)
				sticky[p] = i
				slots[i]++
			} else {
				out[i] = append(out[i], p)
			}
		}
	}
	take := freeCapacity(out, slots, planned == int(partitions))
	slices.Sort(free)
	type cand struct {
		p   int32
		m   int
		off int64
	}
	var cands []cand
	for _, p := range free {
		for i, m := range ms {
			if o := m.offset(p); o >= 0 {
				cands = append(cands, cand{p, i, o})
			}
		}
	}
	// Copies within acceptableRecoveryLag of the warmest are as good as it
	// (Kafka Streams' acceptable.recovery.lag): among them the member the
	// sticky plan chose wins, so a static member back from a restart gets its
	// own partitions again rather than the standby that kept up meanwhile.
	warmest := map[int32]int64{}
	for _, c := range cands {
		warmest[c.p] = max(warmest[c.p], c.off)
	}
	rank := func(c cand) (caughtUp, chosen int) {
		if c.off >= warmest[c.p]-acceptableRecoveryLag {
			caughtUp = 1
		}
		if sticky[c.p] == c.m {
			chosen = 1
		}
		return caughtUp, chosen
	}
	sort.SliceStable(cands, func(a, b int) bool {
		ua, sa := rank(cands[a])
		ub, sb := rank(cands[b])
		if ua != ub {
			return ua > ub
		}
		if ua == 1 && sa != sb {
			return sa > sb
		}
		return cands[a].off > cands[b].off
	})
	placed := map[int32]bool{}
	for _, c := range cands {
		if !placed[c.p] && take(c.m) {
			out[c.m] = append(out[c.m], c.p)
			placed[c.p] = true
		}
	}
	for _, p := range free { // the rest where the sticky plan put them, if it still has room
		if !placed[p] && take(sticky[p]) {
			out[sticky[p]] = append(out[sticky[p]], p)
			placed[p] = true
		}
	}
	for _, p := range free { // and else wherever there is room
		if placed[p] {
			continue
		}
		for i := range ms {
			if take(i) {
				out[i] = append(out[i], p)
				placed[p] = true
				break
			}
		}
	}
	owner := make(map[int32]int, partitions)
	for i := range out {
		slices.Sort(out[i])
		for _, p := range out[i] {
			owner[p] = i
		}
	}

	// (b) Standbys: never on the owner nor on a member still claiming it.
	standby := make([][]int32, len(ms))
	if replicas <= 0 || len(ms) < 2 {
		return out, standby
	}
	eligible := make([][]int, partitions)
	total := 0
	for p := range partitions {
		for i := range ms {
			if o, ok := owner[p]; ok && o == i {
				continue
			}
			if slices.Contains(claimed[p], i) {
				continue
			}
			eligible[p] = append(eligible[p], i)
		}
		total += min(replicas, len(eligible[p]))
	}
	limit := (total + len(ms) - 1) / len(ms) // standbys per member, evenly spread
	count := make([]int, len(ms))
	// The standbys of one owner's partitions are spread over the other
	// members (at most share each), so that when it fails every survivor the
	// sticky plan gives a partition has a warm copy of one.
	ownerOf := func(p int32) int {
		if o, ok := owner[p]; ok {
			return o
		}
		if c := claimed[p]; len(c) > 0 {
			return c[0]
		}
		return -1
	}
	perOwner := map[int]int{}
	for p := range partitions {
		perOwner[ownerOf(p)]++
	}
	others := len(ms) - 1
	spread := map[[2]int]int{} // (owner, member) -> standbys
	for p := range partitions {
		o := ownerOf(p)
		share := (perOwner[o]*min(replicas, others) + others - 1) / others
		over := func(i int) int {
			if spread[[2]int{o, i}] >= share {
				return 1
			}
			return 0
		}
		cs := slices.Clone(eligible[p])
		slices.SortStableFunc(cs, func(a, b int) int {
			if c := cmp.Compare(over(a), over(b)); c != 0 { // within the owner's share first
				return c
			}
			if c := cmp.Compare(ms[b].offset(p), ms[a].offset(p)); c != 0 { // then warm
				return c
			}
			return cmp.Compare(count[a], count[b]) // then the least loaded
		})
		want := min(replicas, len(cs))
		var picked []int
		for _, i := range cs {
			if len(picked) < want && count[i] < limit {
				picked = append(picked, i)
			}
		}
		for _, i := range cs { // everyone at the limit: exceed it rather than drop a standby
			if len(picked) < want && !slices.Contains(picked, i) {
				picked = append(picked, i)
			}
		}
		for _, i := range picked {
			standby[i] = append(standby[i], p)
			count[i]++
			spread[[2]int{o, i}]++
		}
	}
	return out, standby
}

// freeCapacity returns take(i), which reserves room for one more free
// partition on member i, or reports there is none. kept[i] are the claimed
// partitions member i keeps; slots[i] how many free ones the sticky plan gave
// it. When the plan holds every partition (final, none waiting for a revoke)
// any balanced outcome will do: every member ends with floor or ceil of
// partitions/members, as many at ceil as the sticky plan has, so a warm member
// at floor may take the extra partition the sticky plan gave another one.
// Otherwise the sticky plan's counts are kept as they are.
func freeCapacity(kept [][]int32, slots []int, final bool) func(int) bool {
	fixed := func(i int) bool {
		if slots[i] > 0 {
			slots[i]--
			return true
		}
		return false
	}
	total, members := 0, len(kept)
	for i := range kept {
		total += len(kept[i]) + slots[i]
	}
	if !final || members == 0 {
		return fixed
	}
	floor, rem := total/members, total%members
	ceil := floor
	if rem > 0 {
		ceil++
	}
	need, had := make([]int, members), make([]int, members)
	extras := rem
	for i := range kept {
		k := len(kept[i])
		had[i] = k
		switch {
		case k > ceil:
			return fixed // not a balanced plan: keep it
		case k == ceil && ceil > floor:
			extras--
		default:
			need[i] = floor - k
		}
	}
	if extras < 0 {
		return fixed
	}
	extra := make([]bool, members)
	return func(i int) bool {
		switch {
		case need[i] > 0:
			need[i]--
			return true
		case extras > 0 && !extra[i] && had[i] <= floor:
			extras--
			extra[i] = true
			return true
		}
		return false
	}
}

// standbyPlan is a balance plan with each member's standbys in its
// assignment's user data.
type standbyPlan struct {
	plan    map[string]map[string][]int32
	standby map[string][]int32
}

func (s *standbyPlan) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment {
	out := make([]kmsg.SyncGroupRequestGroupAssignment, 0, len(s.plan))
	for member, topics := range s.plan {
		var ka kmsg.ConsumerMemberAssignment
		for topic, parts := range topics {
			slices.Sort(parts)
			t := kmsg.NewConsumerMemberAssignmentTopic()
			t.Topic, t.Partitions = topic, parts
			ka.Topics = append(ka.Topics, t)
		}
		sort.Slice(ka.Topics, func(i, j int) bool { return ka.Topics[i].Topic < ka.Topics[j].Topic })
		ka.UserData, _ = json.Marshal(syncUserData{V: 1, Standby: s.standby[member]})
		a := kmsg.NewSyncGroupRequestGroupAssignment()
		a.MemberID, a.MemberAssignment = member, ka.AppendTo(nil)
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MemberID < out[j].MemberID })
	return out
}
