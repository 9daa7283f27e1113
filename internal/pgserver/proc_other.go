//go:build unix && !linux

package pgserver

import "syscall"

// procAttr runs the server as cred. Without a parent-death signal on this
// system, a server of a killed process runs on until the next Start sweeps its
// directory.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}
