//go:build unix && !linux

package redisserver

import "syscall"

// procAttr starts the server in its own process group. Without a
// parent-death signal on this system, a server of a killed process runs on
// until the next Start sweeps its directory.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
