package redisserver

import "syscall"

// procAttr has the kernel kill the server when the thread that started it
// exits, so that a process that dies or forgets to stop it takes the server
// with it (its data is throwaway: no shutdown needed).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
