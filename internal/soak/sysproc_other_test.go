//go:build !linux

package soak

import "syscall"

// sysProcAttr: without a parent-death signal on this system, children are
// only killed by the test's cleanup.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
