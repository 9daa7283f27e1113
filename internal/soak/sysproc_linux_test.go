package soak

import "syscall"

// sysProcAttr has the kernel kill a child when the test process dies, so that
// no broker or processor outlives a crashed or interrupted soak.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
