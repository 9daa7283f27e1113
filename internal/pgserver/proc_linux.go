package pgserver

import "syscall"

// procAttr runs the server as cred and has the kernel send it SIGQUIT
// (immediate shutdown) when the thread that started it exits, so that a
// process that dies or forgets to stop it takes the server with it. The
// signal is applied after the credential change, which would otherwise clear it.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
}
