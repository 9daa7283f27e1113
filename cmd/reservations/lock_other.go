//go:build !unix

package main

// lockDir does not lock on this platform: do not run two dev processes on one
// data folder.
func lockDir(string) (func(), error) { return func() {}, nil }
