//go:build !linux

package main

import "errors"

// run needs Linux's epoll (fixedrate_linux.go); so does loadbench's
// reading of /proc.
func (f fixedRate) run() (fixedResult, error) {
	return fixedResult{}, errors.New("the fixed-rate phase runs on Linux only")
}
