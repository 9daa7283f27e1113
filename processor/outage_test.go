package processor_test

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkatest"
)

// The broker is down for 30 s (kfake closed, then restarted on the same port
// from its data folder) in the middle of a stream: the processor retries,
// readiness goes false and then true again, and no decision is lost or
// repeated.
func TestBrokerOutage(t *testing.T) {
	if kafkatest.External() {
		t.Skip("needs the in-process kfake broker to stop and restart it; running against external brokers")
	}
	dataDir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dataDir)}
	fake, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	defer func() { fake.Close() }()
	h := newHarnessOn(t, &kafkatest.Cluster{Brokers: fake.ListenAddrs(), Fake: fake}, 4)
	in := h.start("")
	h.waitReady(in)

	w := genWorkload(11, 15, 900)
	h.sendConcurrently(w.sets, 1, 0)
	h.sendConcurrently(w.cmds[:300], 2, 8)
	h.waitDecided(60*time.Second, append(idsOf(w.sets), idsOf(w.cmds[:300])...)...)

	fake.Close()
	down := time.Now()
	require.Eventually(t, func() bool { return !in.p.Ready() }, 20*time.Second, 50*time.Millisecond,
		"readiness goes false while the broker is unreachable")
	// Commands sent during the outage wait in the producer's buffer.
	for _, c := range w.cmds[300:600] {
		v, _ := json.Marshal(c)
		h.prod.Produce(context.Background(), &kgo.Record{Topic: h.names.Commands, Key: []byte(c.SKU), Value: v}, nil)
	}
	time.Sleep(time.Until(down.Add(30 * time.Second))) // the outage itself: 30 s without a broker
	fake, err = kfake.NewCluster(opts...)
	require.NoError(t, err)

	require.Eventually(t, func() bool { return in.p.Ready() }, 90*time.Second, 100*time.Millisecond,
		"readiness comes back with the broker")
	require.NoError(t, h.prod.Flush(context.Background()))
	h.sendConcurrently(w.cmds[600:], 2, 8)
	h.sendConcurrently(w.dupes, 1, 0)
	h.waitDecided(90*time.Second, w.ids()...)
	h.read(30*time.Second, func() bool { return h.duplicates() >= len(w.dupes) })
	h.checkAgainstModel(w)
}
