//go:build unix && !linux

package bench

import "syscall"

// procAttr runs the server as cred (nil: this user).
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
