package topics

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Test vectors of Kafka's own UtilsTest.testMurmur2 (Java client): the
// partition is toPositive(murmur2(key)) % n.
func TestPartitionMatchesKafkaMurmur2(t *testing.T) {
	for key, hash := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		for _, n := range []int32{1, 3, 12, 64} {
			want := int32(uint32(hash)&0x7fffffff) % n
			assert.Equal(t, want, Partition([]byte(key), n), "key %q n %d", key, n)
		}
	}
	// Stable and in range for many keys.
	for i := range 1000 {
		k := []byte("SKU-" + PartitionString(int32(i)))
		p := Partition(k, 12)
		require.True(t, p >= 0 && p < 12)
		require.Equal(t, p, Partition(k, 12))
	}
}

func TestNames(t *testing.T) {
	n := NewNames("p")
	assert.Equal(t, "p.replies", n.Replies)
	assert.Equal(t, []string{"p.commands", "p.results", "p.changelog", "p.dlq", "p.cart-commands", "p.cart-results",
		"p.cart-changelog", "p.replies"}, n.All())
	assert.Empty(t, n.Cart().Replies, "the cart coordinator has no replies topic")
	assert.Equal(t, "3600000", *n.Configs(n.Replies)["retention.ms"])
	assert.Equal(t, "delete", *n.Configs(n.Replies)["cleanup.policy"])
	assert.NotContains(t, n.Configs(n.Results), "retention.ms")
	assert.Equal(t, "compact", *n.Configs(n.CartChangelog)["cleanup.policy"])
}

func TestEnsureCreatesAndVerifies(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	n := NewNames("test")
	got, err := Ensure(ctx, adm, n, 6, 1)
	require.NoError(t, err)
	assert.Equal(t, int32(6), got)
	// The replies topic (extension (l)) is created too, deleted by time after
	// an hour.
	td, err := adm.ListTopics(ctx, n.Replies)
	require.NoError(t, err)
	require.NoError(t, td[n.Replies].Err)
	assert.Len(t, td[n.Replies].Partitions, 6)
	rc, err := adm.DescribeTopicConfigs(ctx, n.Replies)
	require.NoError(t, err)
	cfg, err := rc.On(n.Replies, nil)
	require.NoError(t, err)
	got2 := map[string]string{}
	for _, kv := range cfg.Configs {
		if kv.Value != nil {
			got2[kv.Key] = *kv.Value
		}
	}
	assert.Equal(t, "delete", got2["cleanup.policy"])
	assert.Equal(t, "3600000", got2["retention.ms"])
	// Idempotent.
	got, err = Ensure(ctx, adm, n, 6, 1)
	require.NoError(t, err)
	assert.Equal(t, int32(6), got)

	// A results topic with another partition count breaks the layout.
	bad := NewNames("bad")
	_, err = adm.CreateTopic(ctx, 3, 1, nil, bad.Results)
	require.NoError(t, err)
	_, err = Ensure(ctx, adm, bad, 6, 1)
	require.ErrorIs(t, err, ErrLayout)
}

// The changelog must be compacted and nothing else: with compact,delete the
// entities of idle SKUs age out of the log and a full restore loses them (the
// old Verify accepted compact,delete). Its delete.retention.ms is reported.
func TestVerifyChangelogPolicyAndDeleteRetention(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	n := NewNames("v")
	_, err = Ensure(ctx, adm, n, 2, 1)
	require.NoError(t, err)
	ret, err := ChangelogDeleteRetention(ctx, adm, n.Changelog)
	require.NoError(t, err)
	assert.Equal(t, DefaultDeleteRetention, ret, "kafka's default when unset")

	set := func(k, v string) {
		t.Helper()
		r, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: k, Value: &v}}, n.Changelog)
		require.NoError(t, err)
		for _, x := range r {
			require.NoError(t, x.Err)
		}
	}
	set("delete.retention.ms", "3600000")
	ret, err = ChangelogDeleteRetention(ctx, adm, n.Changelog)
	require.NoError(t, err)
	assert.Equal(t, time.Hour, ret)

	for _, policy := range []string{"compact,delete", "delete", "delete, compact"} {
		set("cleanup.policy", policy)
		_, err = Verify(ctx, adm, n)
		require.ErrorIs(t, err, ErrLayout, "cleanup.policy=%s", policy)
		assert.Contains(t, err.Error(), "want compact")
	}
	set("cleanup.policy", "compact")
	_, err = Verify(ctx, adm, n)
	require.NoError(t, err)
}
