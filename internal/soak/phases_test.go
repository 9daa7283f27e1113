package soak

import "time"

// phases is the schedule of the load: sz.Load of traffic time split into
// Quiet+1 equal traffic phases, separated by Quiet quiet periods of QuietFor
// in which nobody sends a command (only expiry timers and sweeps run, and
// holds with short TTLs sent just before expire). Everything that is paced
// over the load (producers, cart producer, kills, the Postgres restart) is
// placed in traffic time and mapped to wall time with wall, so it never falls
// into a quiet period.
type phases struct {
	start    time.Time
	load     time.Duration // traffic time
	quiet    int
	quietFor time.Duration
}

func newPhases(start time.Time, sz size) phases {
	return phases{start: start, load: sz.Load, quiet: sz.Quiet, quietFor: sz.QuietFor}
}

// boundary is the traffic time after which quiet period k (1..quiet) starts.
func (ph phases) boundary(k int) time.Duration {
	return ph.load * time.Duration(k) / time.Duration(ph.quiet+1)
}

// wall maps traffic time tau to wall time: every quiet period that begins
// before tau shifts it by quietFor.
func (ph phases) wall(tau time.Duration) time.Time {
	n := 0
	for k := 1; k <= ph.quiet; k++ {
		if ph.boundary(k) < tau {
			n++
		}
	}
	return ph.start.Add(tau + time.Duration(n)*ph.quietFor)
}

// window returns the wall-time bounds of quiet period k (0..quiet-1).
func (ph phases) window(k int) (from, to time.Time) {
	from = ph.start.Add(ph.boundary(k+1) + time.Duration(k)*ph.quietFor)
	return from, from.Add(ph.quietFor)
}

// quietAt reports whether t falls into a quiet period.
func (ph phases) quietAt(t time.Time) bool {
	for k := range ph.quiet {
		if from, to := ph.window(k); !t.Before(from) && t.Before(to) {
			return true
		}
	}
	return false
}

// end is when the last traffic phase ends.
func (ph phases) end() time.Time {
	return ph.start.Add(ph.load + time.Duration(ph.quiet)*ph.quietFor)
}
