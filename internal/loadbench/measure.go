package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// result is one wrk run of a row.
type result struct {
	rps, p50, p99 float64 // requests per second; latencies in ms
	cpuPerReq     float64 // microseconds of the row's process per request
	extraPerReq   float64 // the same for its extra process (Redis)
	rssMiB        float64
	non2xx        int
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times, on
// every Linux this runs on.
const clockTicks = 100

// cpuTime is the user plus system time pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: the fields start after its ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// rss is pid's resident memory in MiB.
func rss(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// drive runs wrk against r once.
func drive(r *row, o options) (result, error) {
	args := []string{"-t", strconv.Itoa(o.threads), "-c", strconv.Itoa(o.conns), "-d", fmt.Sprintf("%ds", int(o.duration.Seconds())), "--latency"}
	for _, h := range r.headers {
		args = append(args, "-H", h)
	}
	args = append(args, r.url)
	before, err := cpuTime(r.pid)
	if err != nil {
		return result{}, err
	}
	var extraBefore time.Duration
	if r.extra != 0 {
		extraBefore, _ = cpuTime(r.extra)
	}
	out, err := exec.Command("wrk", args...).Output()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w", err)
	}
	after, err := cpuTime(r.pid)
	if err != nil {
		return result{}, err
	}
	res, err := parseWrk(out)
	if err != nil {
		return result{}, err
	}
	if res.non2xx > 0 {
		return result{}, fmt.Errorf("%d answers were not 2xx (the credentials or route are wrong)", res.non2xx)
	}
	requests := res.rps * o.duration.Seconds()
	res.cpuPerReq = float64((after - before).Microseconds()) / requests
	if r.extra != 0 {
		extraAfter, _ := cpuTime(r.extra)
		res.extraPerReq = float64((extraAfter - extraBefore).Microseconds()) / requests
	}
	res.rssMiB = rss(r.pid)
	return res, nil
}

// parseWrk reads wrk's --latency report.
func parseWrk(out []byte) (result, error) {
	var res result
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			res.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			res.p50 = millis(f[1])
		case len(f) == 2 && f[0] == "99%":
			res.p99 = millis(f[1])
		case len(f) == 5 && f[0] == "Non-2xx":
			res.non2xx, _ = strconv.Atoi(f[4])
		}
	}
	if res.rps == 0 {
		return res, fmt.Errorf("no Requests/sec in wrk's output:\n%s", out)
	}
	return res, nil
}

// millis reads wrk's "812.00us", "1.23ms" or "2.00s".
func millis(v string) float64 {
	for _, u := range []struct {
		suffix string
		scale  float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			f, _ := strconv.ParseFloat(n, 64)
			return f * u.scale
		}
	}
	return 0
}

// median is the middle of the runs' values.
func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func printTable(w io.Writer, o options, rows []*row, logins float64) {
	fmt.Fprintf(w, "wrk -t%d -c%d -d%s, medians of %d runs taken in turns; CPU is the row's process (+ Redis's)\n\n", o.threads, o.conns, o.duration, o.runs)
	fmt.Fprintln(w, "| row | req/s | vs baseline | p50 ms | p99 ms | CPU µs/req | CPU vs baseline | RSS MiB |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	base := rows[1]
	baseRPS := median(base.results, func(r result) float64 { return r.rps })
	baseCPU := median(base.results, func(r result) float64 { return r.cpuPerReq })
	for _, r := range rows {
		rps := median(r.results, func(r result) float64 { return r.rps })
		cpu := median(r.results, func(r result) float64 { return r.cpuPerReq })
		extra := median(r.results, func(r result) float64 { return r.extraPerReq })
		cpuText := fmt.Sprintf("%.1f", cpu)
		if extra > 0 {
			cpuText += fmt.Sprintf(" (+ %.1f Redis)", extra)
		}
		vsRPS, vsCPU := "", ""
		if strings.HasPrefix(r.name, "wxgate") {
			vsRPS, vsCPU = fmt.Sprintf("%.0f%%", 100*rps/baseRPS), fmt.Sprintf("%.2fx", cpu/baseCPU)
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %.2f | %.2f | %s | %s | %.1f |\n", r.name, rps, vsRPS,
			median(r.results, func(r result) float64 { return r.p50 }),
			median(r.results, func(r result) float64 { return r.p99 }),
			cpuText, vsCPU, median(r.results, func(r result) float64 { return r.rssMiB }))
	}
	if base.fixed != nil {
		printFixed(w, o, rows)
	}
	fmt.Fprintf(w, "\nlogins (start -> simulator -> callback, 8 browsers at once, memory store): %.0f per second\n", logins)
}

// printFixed prints the fixed-rate runs: each row at the same rate, with
// its p99 against the baseline's. A row that fell behind the schedule is
// flagged; its latencies then mostly measure the queue it built.
func printFixed(w io.Writer, o options, rows []*row) {
	base := rows[1].fixed
	load := "half the baseline's maximum"
	if o.rate > 0 {
		load = "a fixed rate (-rate)"
	}
	fmt.Fprintf(w, "\nat %s: %.0f req/s, open loop on %d connections, %s, one run per row;\n", load, base.target, o.conns, o.duration)
	fmt.Fprintln(w, "latency from each request's scheduled send time; harness lag is the generator's own lateness, part of the latency")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| row | achieved req/s | p50 ms | p99 ms | p99.9 ms | p99 vs baseline | harness lag p99 ms | harness CPU µs/req |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		f := r.fixed
		achieved := fmt.Sprintf("%.0f", f.achieved)
		switch {
		case f.missed > 0:
			achieved += fmt.Sprintf(" (fell behind: %d of %d still unanswered %s after the end)", f.missed, f.missed+f.done, fixedGrace)
		case !f.kept():
			achieved += fmt.Sprintf(" (fell behind: the last answer %s after the end)", f.over.Round(time.Millisecond))
		}
		vs := ""
		if strings.HasPrefix(r.name, "wxgate") {
			vs = fmt.Sprintf("%+.2f ms", f.p99-base.p99)
		}
		fmt.Fprintf(w, "| %s | %s | %.2f | %.2f | %.2f | %s | %.2f | %.1f |\n", r.name, achieved, f.p50, f.p99, f.p999, vs, f.lag99, f.genCPU)
	}
}
