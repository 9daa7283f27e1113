package processor

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// testMember is one group member as it joins: what it owns (at generation
// gen) and the warm copies it advertises.
type testMember struct {
	id    string
	owned []int32
	gen   int32
	warm  map[int32]int64
}

type balanced struct {
	owned, standby map[string][]int32
}

// balanceGroup runs the standby balancer over members the way franz-go does
// for a group leader: JoinGroup metadata in, SyncGroup assignments out, parsed
// back as each member parses its own.
func balanceGroup(t *testing.T, replicas int, partitions int32, members []testMember) balanced {
	t.Helper()
	const topic = "cmds"
	var jms []kmsg.JoinGroupResponseMember
	for _, m := range members {
		b := &standbyBalancer{topic: topic, replicas: replicas, warm: func() map[int32]int64 { return m.warm }}
		cur := map[string][]int32{}
		if len(m.owned) > 0 {
			cur[topic] = m.owned
		}
		jm := kmsg.NewJoinGroupResponseMember()
		jm.MemberID = m.id
		jm.ProtocolMetadata = b.JoinGroupMetadata([]string{topic}, cur, m.gen)
		jms = append(jms, jm)
	}
	leader := &standbyBalancer{topic: topic, replicas: replicas}
	gmb, topics, err := leader.MemberBalancer(jms)
	require.NoError(t, err)
	require.Contains(t, topics, topic)
	into, err := gmb.(kgo.GroupMemberBalancerOrError).BalanceOrError(map[string]int32{topic: partitions})
	require.NoError(t, err)
	out := balanced{owned: map[string][]int32{}, standby: map[string][]int32{}}
	for _, a := range into.IntoSyncAssignment() {
		m, err := leader.ParseSyncAssignment(a.MemberAssignment)
		require.NoError(t, err)
		out.owned[a.MemberID] = m[topic]
		out.standby[a.MemberID] = parseStandbys(a.MemberAssignment)
	}
	return out
}

func TestStandbyBalancer(t *testing.T) {
	all := func(n int32) []int32 {
		var out []int32
		for p := range n {
			out = append(out, p)
		}
		return out
	}
	tests := []struct {
		name     string
		replicas int
		parts    int32
		members  []testMember
		// want: member -> partitions it must own (nil: not checked).
		want map[string][]int32
		// standbys: how many standbys every partition must have.
		standbys int
		// spread: the standbys of each owner's partitions are on distinct
		// members (as far as they go round).
		spread bool
	}{{
		name: "the failed owner's partitions go to their warm standbys", replicas: 1, parts: 6,
		members: []testMember{
			{id: "b", owned: []int32{2, 3}, gen: 5, warm: map[int32]int64{0: 100, 5: 7}},
			{id: "c", owned: []int32{4, 5}, gen: 5, warm: map[int32]int64{1: 100, 3: 9}},
		},
		want:     map[string][]int32{"b": {0, 2, 3}, "c": {1, 4, 5}},
		standbys: 1,
	}, {
		name: "one partition per member: the failed owner's goes to its standby (b)", replicas: 1, parts: 3,
		members: []testMember{
			{id: "b", owned: []int32{1}, gen: 5, warm: map[int32]int64{0: 100}},
			{id: "c", owned: []int32{2}, gen: 5, warm: map[int32]int64{1: 100}},
		},
		want:     map[string][]int32{"b": {0, 1}, "c": {2}},
		standbys: 1,
	}, {
		name: "one partition per member: the failed owner's goes to its standby (c)", replicas: 1, parts: 3,
		members: []testMember{
			{id: "b", owned: []int32{1}, gen: 5, warm: map[int32]int64{2: 100}},
			{id: "c", owned: []int32{2}, gen: 5, warm: map[int32]int64{0: 100}},
		},
		want:     map[string][]int32{"b": {1}, "c": {0, 2}},
		standbys: 1,
	}, {
		name: "the warmest copy wins (the others more than the acceptable lag behind)", replicas: 1, parts: 4,
		members: []testMember{
			{id: "a", owned: []int32{2}, gen: 5, warm: map[int32]int64{0: 10, 1: 90_000}},
			{id: "b", owned: []int32{3}, gen: 5, warm: map[int32]int64{0: 50_000, 1: 20}},
		},
		want:     map[string][]int32{"a": {1, 2}, "b": {0, 3}},
		standbys: 1,
	}, {
		// A static member back from a restart claims nothing (a new process)
		// but has its stores; the standby that kept up meanwhile is no warmer
		// than the acceptable lag: the partitions go back to the restarted
		// member, where the sticky plan puts them, and nothing moves.
		name: "a restarted member gets its partitions back from an equally warm standby", replicas: 1, parts: 7,
		members: []testMember{
			{id: "b", owned: []int32{2, 3}, gen: 5, warm: map[int32]int64{0: 1000, 1: 1000, 6: 1000}},
			{id: "c", owned: []int32{4, 5}, gen: 5},
			{id: "z", gen: -1, warm: map[int32]int64{0: 1000, 1: 995, 6: 1000}},
		},
		want:     map[string][]int32{"b": {2, 3}, "c": {4, 5}, "z": {0, 1, 6}},
		standbys: 1,
	}, {
		name: "sticky: an owned partition stays even where another copy is warmer", replicas: 1, parts: 4,
		members: []testMember{
			{id: "a", owned: []int32{0, 1}, gen: 5, warm: map[int32]int64{2: 500, 3: 500}},
			{id: "b", owned: []int32{2, 3}, gen: 5, warm: map[int32]int64{0: 500, 1: 500}},
		},
		want:     map[string][]int32{"a": {0, 1}, "b": {2, 3}},
		standbys: 1,
	}, {
		name: "a new group without copies is balanced with standbys elsewhere", replicas: 1, parts: 6,
		members:  []testMember{{id: "a", gen: -1}, {id: "b", gen: -1}, {id: "c", gen: -1}},
		standbys: 1,
	}, {
		name: "more replicas than other members is capped at members-1", replicas: 5, parts: 6,
		members:  []testMember{{id: "a", owned: []int32{0, 1}, gen: 3}, {id: "b", owned: []int32{2, 3}, gen: 3}, {id: "c", owned: []int32{4, 5}, gen: 3}},
		want:     map[string][]int32{"a": {0, 1}, "b": {2, 3}, "c": {4, 5}},
		standbys: 2,
	}, {
		name: "one owner's standbys are spread, even against warm copies", replicas: 1, parts: 6,
		members: []testMember{
			{id: "a", owned: []int32{0, 1}, gen: 4},
			{id: "b", owned: []int32{2, 3}, gen: 4, warm: map[int32]int64{0: 9, 1: 9, 4: 9, 5: 9}},
			{id: "c", owned: []int32{4, 5}, gen: 4},
		},
		want:     map[string][]int32{"a": {0, 1}, "b": {2, 3}, "c": {4, 5}},
		standbys: 1,
		spread:   true,
	}, {
		name: "a single member has no standby", replicas: 2, parts: 3,
		members:  []testMember{{id: "a", owned: []int32{0}, gen: 1}},
		want:     map[string][]int32{"a": {0, 1, 2}},
		standbys: 0,
	}, {
		name: "replicas 0 places no standby", replicas: 0, parts: 4,
		members:  []testMember{{id: "a", owned: all(4), gen: 2}, {id: "b", gen: -1, warm: map[int32]int64{0: 5}}},
		standbys: 0,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := balanceGroup(t, tc.replicas, tc.parts, tc.members)
			owner := map[int32]string{}
			for m, ps := range got.owned {
				for _, p := range ps {
					require.NotContains(t, owner, p, "partition %d owned twice", p)
					owner[p] = m
				}
			}
			for m, ps := range tc.want {
				assert.Equal(t, ps, got.owned[m], "owned by %s", m)
			}
			claims := map[int32][]string{}
			for _, m := range tc.members {
				for _, p := range m.owned {
					claims[p] = append(claims[p], m.id)
				}
			}
			count := map[int32]int{}
			for m, ps := range got.standby {
				for _, p := range ps {
					count[p]++
					assert.NotEqual(t, owner[p], m, "standby of partition %d on its owner", p)
					assert.NotContains(t, claims[p], m, "standby of partition %d on a member still owning it", p)
				}
			}
			for p := range tc.parts {
				assert.Equal(t, tc.standbys, count[p], "standbys of partition %d", p)
			}
			if tc.spread {
				for _, m := range tc.members {
					seen := map[string]int{}
					for sm, ps := range got.standby {
						for _, p := range ps {
							if owner[p] == m.id {
								seen[sm]++
							}
						}
					}
					for sm, n := range seen {
						assert.LessOrEqual(t, n, (len(got.owned[m.id])+len(tc.members)-2)/(len(tc.members)-1),
							"standbys of %s's partitions on %s: %v", m.id, sm, got.standby)
					}
				}
			}
			// Standbys are spread: no member has more than one above another.
			lo, hi := 1<<30, 0
			for _, m := range tc.members {
				lo, hi = min(lo, len(got.standby[m.id])), max(hi, len(got.standby[m.id]))
			}
			assert.LessOrEqual(t, hi-lo, 1, "standbys per member %v", got.standby)
		})
	}
}

// A moving partition (scale-out) is not assigned until its owner revoked it
// (the cooperative adjustment is kept), and no standby of it is placed on
// that owner meanwhile.
func TestStandbyBalancerKeepsCooperativeMoves(t *testing.T) {
	got := balanceGroup(t, 1, 6, []testMember{
		{id: "a", owned: []int32{0, 1, 2, 3, 4, 5}, gen: 7},
		{id: "b", gen: -1, warm: map[int32]int64{0: 40, 1: 40, 2: 40, 3: 40, 4: 40, 5: 40}},
	})
	assert.Empty(t, got.owned["b"], "b gets nothing before a revoked")
	assert.Len(t, got.owned["a"], 3, "a keeps half and revokes the rest")
	for _, p := range got.standby["a"] {
		t.Errorf("standby of partition %d on a, which still owns it", p)
	}
	assert.Len(t, got.standby["b"], 6, "b stands by for all")

	// The second round: a revoked three; they go to b, which is warm.
	kept := got.owned["a"]
	second := balanceGroup(t, 1, 6, []testMember{
		{id: "a", owned: kept, gen: 8},
		{id: "b", gen: 8, warm: map[int32]int64{0: 40, 1: 40, 2: 40, 3: 40, 4: 40, 5: 40}},
	})
	assert.Equal(t, kept, second.owned["a"])
	assert.Len(t, second.owned["b"], 3)
	for _, p := range second.owned["b"] {
		assert.False(t, slices.Contains(kept, p), fmt.Sprint(p))
	}
	assert.Len(t, second.standby["a"], 3, "a stands by for what it gave b")
}
