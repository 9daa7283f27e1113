package bench

import "syscall"

// procAttr runs the server as cred (nil: this user) and has the kernel send it
// SIGQUIT (immediate shutdown) when the thread that started it exits, so that
// a harness that dies takes its server with it.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
}
