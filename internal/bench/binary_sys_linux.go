package bench

import (
	"os"
	"syscall"
	"time"
)

// childAttr has the kernel kill a child (broker, processor, load generator)
// when the harness dies, so that none outlives a crashed or interrupted run.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// ownGroup puts the child in a process group of its own: a terminal's Ctrl-C
// reaches the harness, which stops the child in its turn.
func ownGroup(a *syscall.SysProcAttr) *syscall.SysProcAttr {
	a.Setpgid = true
	return a
}

// maxRSSMB is the peak resident set of an exited child in MB (Linux reports
// ru_maxrss in KiB).
func maxRSSMB(ps *os.ProcessState) float64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return float64(ru.Maxrss) * 1024 / 1e6
	}
	return 0
}

// processCPU is the CPU time (user and system) of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
