package main

import "testing"

// wrkOutput is Debian wrk 4.1's report with --latency.
const wrkOutput = `Running 10s test @ http://127.0.0.1:4000/api/items
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.35us  611.20us  12.91ms   95.12%
    Req/Sec    31.20k     1.10k   33.01k    71.00%
  Latency Distribution
     50%  312.00us
     75%  401.00us
     90%  520.00us
     99%    3.81ms
  310496 requests in 10.00s, 52.41MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  31049.31
Transfer/sec:      5.24MB
`

func TestParseWrk(t *testing.T) {
	got, err := parseWrk([]byte(wrkOutput))
	if err != nil {
		t.Fatal(err)
	}
	want := result{rps: 31049.31, p50: 0.312, p99: 3.81, non2xx: 12}
	if got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}
	if _, err := parseWrk([]byte("unable to connect to 127.0.0.1:1 Connection refused\n")); err == nil {
		t.Error("parseWrk of a failed run: no error")
	}
}

func TestMillis(t *testing.T) {
	for in, want := range map[string]float64{"812.00us": 0.812, "1.23ms": 1.23, "2.00s": 2000, "7": 0} {
		if got := millis(in); got != want {
			t.Errorf("millis(%q) = %v, want %v", in, got, want)
		}
	}
}
