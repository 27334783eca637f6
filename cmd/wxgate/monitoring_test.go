package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/wxgate/wxgate/metrics"
)

// The dashboard and alert rules shipped under deploy/. Their test lives
// here, with the process helpers, so that the PromQL parser is a test
// dependency only: the binary does not link it.
const (
	dashboardFile = "../../deploy/grafana/wxgate-dashboard.json"
	rulesFile     = "../../deploy/prometheus/wxgate-alerts.yaml"
)

// notInRun are the families the full run of TestMonitoringMetrics cannot
// produce, with why; they are checked against the registry's descriptors
// instead (a vector with no child is not exposed).
var notInRun = map[string]string{
	"wxgate_store_errors_total":           "dev's memory store does not fail",
	"wxgate_upstream_responses_cut_total": "the demo upstream never cuts an answer",
	"wxgate_upstream_retries_total":       "the demo upstream keeps its connections",
	"wxgate_login_starts_refused_total":   "the run stays under the login-start limits",
	"wxgate_logins_capped_total":          "max_logins_per_user is not reached",
}

// labelsAdded are labels Prometheus adds at scrape (job, instance) or that
// a histogram's _bucket series carries (le).
var labelsAdded = map[string]bool{"job": true, "instance": true, "le": true}

// TestMonitoringMetrics runs `wxgate dev` through every login flow, a
// WeChat error, a WeChat outage, the app access token (fetched, then
// blocked by 40164) and a WebSocket, scrapes /metrics, and checks that
// every metric and label the dashboard and the alert rules select is one
// wxgate exposes.
func TestMonitoringMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	exprs := append(dashboardExprs(t), ruleExprs(t)...)
	used := selectedMetrics(t, exprs)

	bin := buildWxgate(t)
	port, aport := freePort(t), freePort(t)
	public, admin := "http://127.0.0.1:"+port, "http://127.0.0.1:"+aport
	state := t.TempDir()
	p := startDev(t, bin, state, gatewayEnv(port, public,
		"WXGATE_SERVER_ADMIN_LISTEN=127.0.0.1:"+aport,
		"WXGATE_TOKENS_SIGNING_KEY_FILE="+filepath.Join(state, "signing.pem"),
		"WXGATE_SESSION_SNAPSHOT_FILE="+filepath.Join(state, "sessions.snapshot")))
	fullRun(t, public, admin, p.simURL)

	exposed := scrape(t, admin+"/metrics")
	described := describedLabels(t)
	// Families the run cannot produce are checked against the descriptors.
	have := map[string]map[string]bool{}
	for name := range used {
		if ls, ok := exposed[name]; ok {
			have[name] = ls
		} else if why, listed := notInRun[name]; listed {
			have[name] = described[name]
			t.Logf("%s: not in the run (%s), checked against the registry's descriptors", name, why)
		} else {
			t.Errorf("%s: selected by the dashboard or rules but not exposed after the full run", name)
			have[name] = map[string]bool{}
		}
	}
	if bad := mismatches(used, have); len(bad) > 0 {
		t.Errorf("the dashboard and rules select what wxgate does not expose:\n%s", strings.Join(bad, "\n"))
	}
	// The alerts' own series must be among those the run produced: an
	// alert on a metric that never appears would never fire.
	for _, name := range []string{"wxgate_app_token_blocked", "wxgate_app_token_expiry_timestamp_seconds", "wxgate_wechat_api_calls_total", "wxgate_requests_total", "wxgate_config_last_reload_success"} {
		if _, ok := exposed[name]; !ok {
			t.Errorf("%s not exposed after the full run", name)
		}
	}
}

// fullRun drives the gateway at public: each login flow, WeChat failing,
// the app token and a WebSocket.
func fullRun(t *testing.T, public, admin, simURL string) {
	t.Helper()
	const (
		oa  = "wxd0c5a1e0000000a1" // the shipped gateway.toml's apps
		mp  = "wxd0c5a1e0000000c3"
		app = "wxd0c5a1e0000000d4"
	)
	c := newClient(t, public)
	c.login("alice")

	// A WebSocket through the demo upstream, with the cookie session.
	u, _ := url.Parse(public)
	var cookies []string
	for _, ck := range c.c.Jar.Cookies(u) {
		cookies = append(cookies, ck.Name+"="+ck.Value)
	}
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+u.Host+"/ws/echo", http.Header{"Cookie": {strings.Join(cookies, "; ")}, "Origin": {public}})
	if err != nil {
		t.Fatalf("WebSocket: %v %v", resp, err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := ws.ReadMessage(); err != nil {
		t.Fatalf("WebSocket greeting: %v", err)
	}
	ws.Close()

	// Mini program and mobile app: code -> token pair.
	pr := c.miniprogramLogin(simURL, "bob")
	if status, _ := c.bearer(pr.AccessToken); status != http.StatusOK {
		t.Errorf("mini-program API call: %d", status)
	}
	var code struct{ Code string }
	simJSON(t, simURL, "/_sim/code", `{"appid":"`+app+`","user":"carol"}`, &code)
	if resp, body := c.do("POST", public+"/_wxgate/app/login", map[string]string{"Content-Type": "application/json"}, `{"code":"`+code.Code+`"}`); resp.StatusCode != http.StatusOK {
		t.Errorf("app login: %d %s", resp.StatusCode, body)
	}

	// A desktop browser logs in by QR through the website app.
	desk := newClient(t, public)
	desk.c.CheckRedirect = nil
	resp, page := desk.do("GET", public+"/_wxgate/start?rd=%2F", map[string]string{"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}, "")
	frame := regexp.MustCompile(`<iframe src="([^"]+)"`).FindSubmatch(page)
	if frame == nil {
		t.Fatalf("no QR frame at %s: %.300s", resp.Request.URL, page)
	}
	frameURL := strings.TrimSuffix(strings.ReplaceAll(string(frame[1]), "&amp;", "&"), "&login_type=jssdk&self_redirect=false")
	if resp, _ := desk.do("GET", frameURL+"&sim_user=dave&sim_decision=allow", map[string]string{"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}, ""); resp.Request.URL.String() != public+"/" {
		t.Errorf("QR login ended on %s", resp.Request.URL)
	}

	// WeChat refuses a code (40029): the login starts again at WeChat.
	// Then WeChat does not answer: the login fails with an error page.
	// Neither ends alice's session.
	simJSON(t, simURL, "/_sim/fault", `{"path":"/sns/oauth2/access_token","errcode":40029}`, new(map[string]any))
	if resp := callback(t, public); resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "/connect/oauth2/authorize?") {
		t.Errorf("callback when WeChat refuses the code: %d %q, want a new authorization", resp.StatusCode, resp.Header.Get("Location"))
	}
	simJSON(t, simURL, "/_sim/fault", `{"path":"/sns/oauth2/access_token","http_status":502,"times":10}`, new(map[string]any))
	if resp := callback(t, public); resp.StatusCode < 500 {
		t.Errorf("callback when WeChat is down: %d, want an error page", resp.StatusCode)
	}
	if openid, status := c.whoami(); openid == "" {
		t.Errorf("alice after WeChat failed others' logins: %d", status)
	}

	// The app token: fetched for the official account, blocked by 40164
	// for the mini program.
	if resp, _ := c.do("GET", admin+"/app-token?appid="+oa, nil, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("app token of the official account: %d", resp.StatusCode)
	}
	simJSON(t, simURL, "/_sim/fault", `{"path":"/cgi-bin/stable_token","errcode":40164,"times":10}`, new(map[string]any))
	if resp, _ := c.do("GET", admin+"/app-token?appid="+mp, nil, ""); resp.StatusCode == http.StatusOK {
		t.Errorf("app token with 40164: 200")
	}
	if v := adminMetric(admin, `wxgate_app_token_blocked{appid="`+mp+`",errcode="40164"}`); v != 1 {
		t.Errorf("wxgate_app_token_blocked for 40164 = %v, want 1", v)
	}

	// The run did what it says, as the dashboard will show it.
	for _, series := range []string{
		`wxgate_logins_total{flow="oa",result="ok"}`,
		`wxgate_logins_total{flow="qr",result="ok"}`,
		`wxgate_logins_total{flow="miniprogram",result="ok"}`,
		`wxgate_logins_total{flow="app",result="ok"}`,
		`wxgate_logins_total{flow="oa",result="wechat_error"}`,
		`wxgate_wechat_api_calls_total{endpoint="/sns/oauth2/access_token",errcode="40029"}`,
		`wxgate_wechat_api_calls_total{endpoint="/sns/oauth2/access_token",errcode="unavailable"}`,
		`wxgate_token_refreshes_total{kind="app",result="ok"}`,
		`wxgate_app_token_blocked{appid="` + oa + `",errcode="40164"}`,
	} {
		if v := adminMetric(admin, series); v < 0 || (v == 0) != strings.HasPrefix(series, "wxgate_app_token_blocked") {
			t.Errorf("%s = %v after the run", series, v)
		}
	}
}

// callback walks an official-account login in a new browser and returns
// the gateway's answer to WeChat's callback.
func callback(t *testing.T, public string) *http.Response {
	t.Helper()
	c := newClient(t, public)
	auth := c.next(c.next(public + "/"))
	cb := c.next(strings.TrimSuffix(auth, "#wechat_redirect") + "&sim_user=eve&sim_decision=allow")
	resp, _ := c.do("GET", cb, nil, "")
	return resp
}

// scrape reads the exposition at u: family name -> its label names.
func scrape(t *testing.T, u string) map[string]map[string]bool {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	out := map[string]map[string]bool{}
	for name, f := range fams {
		ls := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = true
			}
		}
		out[name] = ls
	}
	return out
}

// describedLabels is every family metrics.New registers, with its
// variable labels, from the descriptors.
func describedLabels(t *testing.T) map[string]map[string]bool {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { metrics.New(func() float64 { return 0 }).Registry.Describe(ch); close(ch) }()
	re := regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^}]*)\}\}$`)
	out := map[string]map[string]bool{}
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("descriptor %s: unexpected form", d)
		}
		ls := map[string]bool{}
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				ls[l] = true
			}
		}
		out[m[1]] = ls
	}
	return out
}

// grafanaVars stand in for the range variables Grafana replaces before
// the query reaches Prometheus; $job and $instance sit inside strings.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// selectedMetrics parses each expression and returns the metric families
// they select, with the labels each is matched or grouped on.
func selectedMetrics(t *testing.T, exprs []string) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	for _, e := range exprs {
		if err := extract(grafanaVars.Replace(e), out); err != nil {
			t.Errorf("%q: %v", e, err)
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d metrics selected: the expressions were not read", len(out))
	}
	return out
}

// extract adds to out the families e selects (a histogram's _bucket, _sum
// and _count are its family) and the labels it matches or groups them on.
func extract(e string, out map[string]map[string]bool) error {
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(e)
	if err != nil {
		return err
	}
	var nameless bool
	parser.Inspect(ast, func(n parser.Node, path []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			nameless = true
			return nil
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && strings.HasSuffix(base, "_seconds") {
				name = base
			}
		}
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, m := range vs.LabelMatchers {
			if m.Name != model.MetricNameLabel {
				out[name][m.Name] = true
			}
		}
		for _, a := range path {
			if agg, ok := a.(*parser.AggregateExpr); ok && !agg.Without {
				for _, l := range agg.Grouping {
					out[name][l] = true
				}
			}
		}
		return nil
	})
	if nameless {
		return errors.New("a selector without a metric name")
	}
	return nil
}

// mismatches lists each family or label in used that have lacks.
func mismatches(used, have map[string]map[string]bool) []string {
	var out []string
	for name, labels := range used {
		ls, ok := have[name]
		if !ok {
			out = append(out, name+": no such metric")
			continue
		}
		for l := range labels {
			if !ls[l] && !labelsAdded[l] {
				out = append(out, name+": no label "+l+" (it has "+strings.Join(keys(ls), ", ")+")")
			}
		}
	}
	slices.Sort(out)
	return out
}

// dashboardExprs checks the dashboard's form and returns its queries.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string
		UID        string
		Templating struct {
			List []struct {
				Name, Type string
				Query      any
			}
		}
		Panels []panel
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	vars := map[string]string{}
	var exprs []string
	labelValues := regexp.MustCompile(`^label_values\((.+), *(\w+)\)$`)
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if q, ok := v.Query.(map[string]any); ok && v.Type == "query" {
			// label_values(selector, label): the selector is PromQL too.
			m := labelValues.FindStringSubmatch(fmt.Sprint(q["query"]))
			if m == nil {
				t.Errorf("variable %s: query %v is not label_values(selector, label)", v.Name, q["query"])
				continue
			}
			exprs = append(exprs, m[1])
		}
		if v.Name == "datasource" && v.Query != "prometheus" {
			t.Errorf("datasource variable queries %v, want prometheus", v.Query)
		}
	}
	if vars["datasource"] != "datasource" || vars["job"] != "query" || vars["instance"] != "query" {
		t.Errorf("template variables %v: want datasource, job and instance", vars)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q uid %q", d.Title, d.UID)
	}
	ids := map[int]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
				t.Errorf("panel %q: datasource %+v, %d targets", p.Title, p.Datasource, len(p.Targets))
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q target %s: expr %q datasource %+v", p.Title, tg.RefID, tg.Expr, tg.Datasource)
				}
				if strings.Contains(tg.Expr, "wxgate_") && !strings.Contains(tg.Expr, `instance=~"$instance"`) {
					t.Errorf("panel %q target %s ignores the instance variable: %s", p.Title, tg.RefID, tg.Expr)
				}
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	walk(d.Panels)
	return exprs
}

type panel struct {
	ID         int
	Type       string
	Title      string
	Datasource struct{ Type, UID string }
	Targets    []struct {
		RefID      string
		Expr       string
		Datasource struct{ Type, UID string }
	}
	Panels []panel
}

// alertRules is the rule file's form; decoding rejects unknown keys.
type alertRules struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// promFuncs are the template functions the annotations may call, so that
// text/template can parse them as Prometheus will.
var promFuncs = template.FuncMap{}

func init() {
	for _, f := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp", "query", "first", "value", "label", "printf", "reReplaceAll", "title", "toUpper", "toLower", "match", "args", "safeHtml", "externalURL", "pathPrefix", "strvalue", "sortByLabel", "stripPort", "stripDomain", "parseDuration", "tableLink", "graphLink", "toTime", "toDuration", "now"} {
		promFuncs[f] = func(...any) any { return nil }
	}
}

// ruleExprs checks the alert rules' form and returns their expressions;
// with promtool on PATH it also runs promtool check rules.
func ruleExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf alertRules
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	want := []string{"WeChatFailing", "AppTokenBlocked", "AppTokenExpiringSoon", "StoreErrors", "High5xx", "ConfigReloadFailed"}
	var seen, exprs []string
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q with %d rules", g.Name, len(g.Rules))
		}
		for _, r := range g.Rules {
			if r.Alert == "" || slices.Contains(seen, r.Alert) {
				t.Errorf("rule %q: an alert needs a unique name", r.Alert)
			}
			seen = append(seen, r.Alert)
			if d, err := model.ParseDuration(r.For); err != nil || d == 0 {
				t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			for _, a := range []string{"summary", "description"} {
				text := r.Annotations[a]
				if len(text) < 20 {
					t.Errorf("%s: annotation %s %q says too little", r.Alert, a, text)
				}
				if _, err := template.New(a).Funcs(promFuncs).Parse("{{$labels := .Labels}}{{$value := .Value}}" + text); err != nil {
					t.Errorf("%s: annotation %s: %v", r.Alert, a, err)
				}
			}
			exprs = append(exprs, r.Expr)
		}
	}
	for _, w := range want {
		if !slices.Contains(seen, w) {
			t.Errorf("no alert %s", w)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		if out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput(); err != nil {
			t.Errorf("promtool check rules: %v\n%s", err, out)
		}
	} else if os.Getenv("WXGATE_REQUIRE_PROMTOOL") != "" {
		t.Error("promtool is not on PATH and WXGATE_REQUIRE_PROMTOOL is set")
	} else {
		t.Log("promtool not on PATH: rules checked by this test's parser only")
	}
	return exprs
}

// TestMonitoringChecksRefuseMistakes feeds the checks broken expressions
// and rules: each must be refused, or TestMonitoringMetrics proves nothing.
func TestMonitoringChecksRefuseMistakes(t *testing.T) {
	described := describedLabels(t)
	for _, e := range []string{
		`rate(wxgate_request_total[5m])`,                                  // a typo in the name
		`sum by (path) (rate(wxgate_requests_total[5m]))`,                 // no such label
		`wxgate_logins_total{method="qr"}`,                                // no such label
		`histogram_quantile(0.9, rate(wxgate_requests_total_bucket[5m]))`, // a counter has no buckets
		`sum by (route (rate(wxgate_requests_total[5m]))`,                 // not PromQL
		`rate({route="x"}[5m])`,                                           // no metric name
	} {
		used := map[string]map[string]bool{}
		if err := extract(e, used); err == nil && len(mismatches(used, described)) == 0 {
			t.Errorf("%s passed the checks", e)
		}
	}
	// The families and labels the dashboard uses pass against the
	// descriptors too (the same check as the full run, without it).
	used := selectedMetrics(t, append(dashboardExprs(t), ruleExprs(t)...))
	if bad := mismatches(used, described); len(bad) > 0 {
		t.Errorf("against the registry's descriptors:\n%s", strings.Join(bad, "\n"))
	}
	var rf alertRules
	dec := yaml.NewDecoder(strings.NewReader("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    fro: 5m\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err == nil {
		t.Error("a rule with fro: instead of for: decoded")
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
