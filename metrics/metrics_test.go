package metrics

import (
	"bytes"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRequestCells: the children kept per route and status count what
// WithLabelValues would, each under its own labels.
func TestRequestCells(t *testing.T) {
	m := New(func() float64 { return 0 })
	for range 3 {
		m.Request("app", 200, time.Millisecond)
	}
	m.Request("app", 502, time.Millisecond)
	m.Request("api", 200, time.Millisecond)
	m.Upstream("app", "ok", time.Millisecond)
	m.Upstream("app", "ok", time.Millisecond)
	m.Upstream("app", "timeout", time.Second)
	for _, tc := range []struct {
		route, code string
		want        float64
	}{
		{"app", "200", 3},
		{"app", "502", 1},
		{"api", "200", 1},
		{"api", "502", 0},
	} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(tc.route, tc.code)); got != tc.want {
			t.Errorf("wxgate_requests_total{route=%q,code=%q} = %v, want %v", tc.route, tc.code, got, tc.want)
		}
	}
	if got := testutil.CollectAndCount(m.requestDuration); got != 2 {
		t.Errorf("request duration series = %d, want 2 (app, api)", got)
	}
	if got := testutil.CollectAndCount(m.upstreamDuration); got != 2 {
		t.Errorf("upstream duration series = %d, want 2 (ok, timeout)", got)
	}
}

func BenchmarkRequest(b *testing.B) {
	m := New(func() float64 { return 0 })
	b.ReportAllocs()
	for b.Loop() {
		m.Request("app", 200, time.Millisecond)
		m.Upstream("app", "ok", time.Millisecond)
	}
}

// TestLoggedIn: a login counts under its flow's ok result and under the key
// the upstream will see as X-Forwarded-User.
func TestLoggedIn(t *testing.T) {
	m := New(nil)
	m.LoggedIn("oa", true)
	m.LoggedIn("qr", true)
	m.LoggedIn("oa", false)
	for _, tc := range []struct {
		flow, key string
		want      float64
	}{
		{"oa", "unionid", 1}, {"oa", "openid", 1}, {"qr", "unionid", 1}, {"qr", "openid", 0},
	} {
		if got := testutil.ToFloat64(m.loginKeys.WithLabelValues(tc.flow, tc.key)); got != tc.want {
			t.Errorf("wxgate_login_identities_total{flow=%q,key=%q} = %v, want %v", tc.flow, tc.key, got, tc.want)
		}
	}
	if got := testutil.ToFloat64(m.logins.WithLabelValues("oa", "ok")); got != 2 {
		t.Errorf(`wxgate_logins_total{flow="oa",result="ok"} = %v, want 2`, got)
	}
}

// TestEveryMetricDocumented: docs/operations.md "Every metric" has a row
// for each metric wxgate registers.
func TestEveryMetricDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	descs := make(chan *prometheus.Desc, 256)
	New(func() float64 { return 0 }).Registry.Describe(descs)
	close(descs)
	re := regexp.MustCompile(`fqName: "(wxgate_[a-z_]+)"`)
	n := 0
	for d := range descs {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			continue
		}
		n++
		if !bytes.Contains(doc, []byte("| `"+m[1])) {
			t.Errorf("%s has no row in docs/operations.md's metric table", m[1])
		}
	}
	if n < 20 {
		t.Fatalf("found %d wxgate metrics; the Desc format changed?", n)
	}
}
