// Command loadbench measures wxgate against a bare fiber reverse proxy in
// front of the same fasthttp origin, on loopback, in one run (make bench):
//
//	go run ./internal/loadbench [-duration 10s] [-runs 3] [-conns 16] [-profile DIR] [-rate N]
//
// It starts, each as its own process so that /proc gives each its CPU
// time: the origin, the baseline (fiber's proxy.Balancer, no auth), and
// wxgate twice (memory store, and Redis store with a redis-server it
// starts), with the WeChat simulator in this process for logins. wrk
// (Debian's wrk) drives every row for the same time and concurrency, and
// the table gives req/s, p50, p99, CPU microseconds per request, RSS, and
// each wxgate row's ratios to the baseline measured in the same run.
// Then a fixed-rate phase (fixedrate.go) drives every row once at the
// same rate, half the baseline's req/s, and a second table gives the
// latencies timed from each request's scheduled send and each wxgate
// row's p99 less the baseline's.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "origin":
			origin(os.Args[2])
			return
		case "baseline":
			baseline(os.Args[2], os.Args[3])
			return
		}
	}
	duration := flag.Duration("duration", 10*time.Second, "how long wrk drives each run")
	runs := flag.Int("runs", 3, "runs per row; the table gives medians")
	conns := flag.Int("conns", 16, "wrk connections")
	threads := flag.Int("threads", 1, "wrk threads")
	profile := flag.String("profile", "", "a directory for a CPU profile (pprof) of each wxgate row's last run")
	rate := flag.Float64("rate", 0, "requests per second of the fixed-rate phase (0: half the baseline's median; -1: skip it)")
	flag.Parse()
	if err := run(options{duration: *duration, runs: *runs, conns: *conns, threads: *threads, profile: *profile, rate: *rate}); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}
