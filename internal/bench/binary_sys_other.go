//go:build !linux

package bench

import (
	"os"
	"syscall"
	"time"
)

// childAttr: without Pdeathsig the children are only stopped by the harness.
func childAttr() *syscall.SysProcAttr { return nil }

// ownGroup: the child stays in the harness's process group.
func ownGroup(a *syscall.SysProcAttr) *syscall.SysProcAttr { return a }

// maxRSSMB is not measured off Linux.
func maxRSSMB(*os.ProcessState) float64 { return 0 }

// processCPU is not measured off Linux.
func processCPU() time.Duration { return 0 }
