package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// opTimeout bounds one command of a closed-loop client.
const opTimeout = 10 * time.Second

// outcome is a system's answer to one command.
type outcome struct {
	accepted  bool
	duplicate bool
	retries   int
}

// executor executes one command and waits for its decision.
type executor interface {
	exec(ctx context.Context, o *op) (outcome, error)
}

// closedLoop runs p's sessions on `clients` concurrent clients, each sending
// one command and waiting for its decision before the next, until every
// session is done or timeout passes (clients then stop taking new sessions).
func closedLoop(ctx context.Context, ex executor, p *plan, clients int, timeout time.Duration, st *Step) {
	st.Kind, st.Clients, st.Planned = KindClosed, clients, p.ops
	st.HotStock, st.HotAsked = p.hotStock, 0
	deadline := time.Now().Add(timeout)
	var next atomic.Int64
	var lat samples
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			var c Step // this client's counters
			local := make([]time.Duration, 0, 64)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= len(p.sessions) {
					break
				}
				for k := range p.sessions[i] {
					o := &p.sessions[i][k]
					octx, cancel := context.WithTimeout(ctx, opTimeout)
					t0 := time.Now()
					oc, err := ex.exec(octx, o)
					d := time.Since(t0)
					cancel()
					if err != nil {
						c.Errors++
						break // the rest of the session depends on this command
					}
					local = append(local, d)
					c.Completed++
					c.Retries += oc.retries
					switch {
					case oc.duplicate || o.dup:
						c.Duplicates++
					case oc.accepted:
						c.Accepted++
					default:
						c.Rejected++
					}
					if o.hot && !o.dup {
						c.HotAsked += o.qty
						if oc.accepted {
							c.HotAccepted += o.qty
						}
					}
				}
			}
			lat.addAll(local)
			mu.Lock()
			st.Completed += c.Completed
			st.Errors += c.Errors
			st.Retries += c.Retries
			st.Accepted += c.Accepted
			st.Rejected += c.Rejected
			st.Duplicates += c.Duplicates
			st.HotAsked += c.HotAsked
			st.HotAccepted += c.HotAccepted
			mu.Unlock()
		})
	}
	wg.Wait()
	st.Seconds = time.Since(start).Seconds()
	if st.Seconds > 0 {
		st.Throughput = float64(st.Completed) / st.Seconds
	}
	st.TimedOut = next.Load() < int64(len(p.sessions)) // sessions were left when the clients stopped
	lat.fill(st)
}
