package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wxgate/wxgate/wechat/wechatsim"
)

type options struct {
	duration time.Duration
	runs     int
	conns    int
	threads  int
	// profile, if set, is a directory that receives a CPU profile of
	// each wxgate row, taken during its last run.
	profile string
	// rate is the fixed-rate phase's requests per second; 0 means half
	// the baseline's median req/s in the wrk runs, and less than 0 skips
	// the phase.
	rate float64
}

// The apps wxgate and the simulator share.
const (
	oaID, oaSecret   = "wxbench0000000oa1", "bench-oa-secret-0123456789"
	appID, appSecret = "wxbench000000app1", "bench-app-secret-0123456789"
)

// proc is a process the run started.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string
}

func (p *proc) stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
		}
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start runs name with args and waits until addr accepts connections.
func start(name, addr string, env []string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if name != "redis" { // its start-up banner says nothing useful here
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, addr: addr}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s: not listening on %s after 20s", name, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// row is one line of the table: a target driven by wrk.
type row struct {
	name    string
	url     string
	headers []string
	// pids whose CPU the row counts; extra is counted apart (Redis).
	pid, extra int
	// admin is the gateway's admin listener (wxgate rows only).
	admin   string
	results []result
	// fixed is the row's fixed-rate run, if any.
	fixed *fixedResult
}

func run(o options) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is not installed (apt-get install wrk)")
	}
	dir, err := os.MkdirTemp("", "wxgate-loadbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "wxgate")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/wxgate").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/wxgate (run from the repository root): %v\n%s", err, out)
	}
	var procs []*proc
	defer func() {
		for _, p := range slices.Backward(procs) {
			p.stop()
		}
	}()
	launch := func(name string, env []string, bin string, args ...string) (*proc, error) {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		for i, a := range args {
			args[i] = strings.ReplaceAll(strings.ReplaceAll(a, "ADDR", addr), "PORT", port)
		}
		env = slices.Clone(env)
		for i, e := range env {
			env[i] = strings.ReplaceAll(e, "ADDR", addr)
		}
		p, err := start(name, addr, env, bin, args...)
		if err == nil {
			procs = append(procs, p)
		}
		return p, err
	}

	orig, err := launch("origin", nil, self, "origin", "ADDR")
	if err != nil {
		return err
	}
	base, err := launch("baseline", nil, self, "baseline", "ADDR", orig.addr)
	if err != nil {
		return err
	}
	redis, err := launch("redis", nil, "redis-server", "--port", "PORT", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err != nil {
		return err
	}
	_ = redis

	sim := wechatsim.New(
		wechatsim.App{AppID: oaID, Secret: oaSecret, Type: wechatsim.OfficialAccount, OpenPlatformID: "bench"},
		wechatsim.App{AppID: appID, Secret: appSecret, Type: wechatsim.MobileApp, OpenPlatformID: "bench"},
	)
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	simSrv := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = simSrv.Serve(simLn) }()
	defer simSrv.Close()
	simURL := "http://" + simLn.Addr().String()

	key := filepath.Join(dir, "signing-key.pem")
	if out, err := exec.Command(bin, "keygen", "--out", key).CombinedOutput(); err != nil {
		return fmt.Errorf("wxgate keygen: %v\n%s", err, out)
	}
	sessionKey := make([]byte, 32)
	_, _ = rand.Read(sessionKey)
	env := []string{
		"BENCH_OA_SECRET=" + oaSecret, "BENCH_APP_SECRET=" + appSecret,
		"BENCH_SESSION_KEY=" + base64.StdEncoding.EncodeToString(sessionKey),
		"WXGATE_SERVER_LISTEN=ADDR", "WXGATE_SERVER_PUBLIC_URL=http://ADDR",
	}
	admins := map[*proc]string{}
	gateway := func(name, store string) (*proc, error) {
		cfg := filepath.Join(dir, name+".toml")
		redisSection := ""
		if store == "redis" {
			redisSection = fmt.Sprintf("encryption_key_env = \"BENCH_SESSION_KEY\"\n[session.redis]\naddrs = [%q]\n", redis.addr)
		}
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(configTemplate, o.profile != "", store, redisSection, key, simURL, simURL, oaID, appID, orig.addr)), 0o600); err != nil {
			return nil, err
		}
		admin, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p, err := launch(name, append(env, "WXGATE_SERVER_ADMIN_LISTEN="+admin), bin, "serve", "--config", cfg)
		if err == nil {
			admins[p] = admin
		}
		return p, err
	}
	mem, err := gateway("wxgate-memory", "memory")
	if err != nil {
		return err
	}
	red, err := gateway("wxgate-redis", "redis")
	if err != nil {
		return err
	}

	memCookie, err := browserLogin(mem.addr, simURL, "alice")
	if err != nil {
		return fmt.Errorf("logging in on %s: %w", mem.name, err)
	}
	redCookie, err := browserLogin(red.addr, simURL, "alice")
	if err != nil {
		return fmt.Errorf("logging in on %s: %w", red.name, err)
	}
	bearer, err := appLogin(mem.addr, simURL, "bob")
	if err != nil {
		return fmt.Errorf("app login on %s: %w", mem.name, err)
	}

	rows := []*row{
		{name: "origin direct", url: "http://" + orig.addr + "/api/items", pid: orig.cmd.Process.Pid},
		{name: "baseline: bare fiber proxy", url: "http://" + base.addr + "/api/items", pid: base.cmd.Process.Pid},
		{name: "wxgate: public route", url: "http://" + mem.addr + "/public/items", pid: mem.cmd.Process.Pid, admin: admins[mem]},
		{name: "wxgate: cookie session", url: "http://" + mem.addr + "/api/items", headers: []string{"Cookie: " + memCookie}, pid: mem.cmd.Process.Pid, admin: admins[mem]},
		{name: "wxgate: bearer token", url: "http://" + mem.addr + "/api/items", headers: []string{"Authorization: Bearer " + bearer}, pid: mem.cmd.Process.Pid, admin: admins[mem]},
		{name: "wxgate: cookie session, Redis", url: "http://" + red.addr + "/api/items", headers: []string{"Cookie: " + redCookie}, pid: red.cmd.Process.Pid, extra: redis.cmd.Process.Pid, admin: admins[red]},
	}
	// Rows take turns, run by run, so that a slow spell of the machine
	// falls on all of them alike.
	for i := range o.runs {
		for _, r := range rows {
			var prof chan error
			if o.profile != "" && r.admin != "" && i == o.runs-1 {
				prof = make(chan error, 1)
				go func() { prof <- profileRow(r, o) }()
			}
			res, err := drive(r, o)
			if prof != nil {
				if perr := <-prof; perr != nil && err == nil {
					err = perr
				}
			}
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", r.name, i+1, err)
			}
			r.results = append(r.results, res)
		}
	}
	// Then the same absolute rate for every row, open loop, so that their
	// latencies compare at a load the baseline bears easily (issue 10: p99
	// within 0.5 ms of the baseline's at half its maximum).
	rate := o.rate
	if rate == 0 {
		rate = median(rows[1].results, func(r result) float64 { return r.rps }) / 2
	}
	if rate > 0 {
		for _, r := range rows {
			res, err := driveFixed(r, o, rate)
			if err != nil {
				return fmt.Errorf("%s, fixed rate: %w", r.name, err)
			}
			r.fixed = &res
		}
	}
	logins, err := loginRate(mem.addr, simURL, o.duration)
	if err != nil {
		return fmt.Errorf("login rate: %w", err)
	}
	printTable(os.Stdout, o, rows, logins)
	return nil
}

// configTemplate is the gateway's configuration: one route of each kind
// the table measures, in front of the origin.
const configTemplate = `
[server]
pprof = %t
log_level = "error"
shutdown_delay = "0s"

[session]
store = %q
snapshot_file = ""
max_pending_per_client = 100000

%s
[tokens]
signing_key_file = %q

[wechat]
api_base = %q
open_base = %q

[wechat.official_account]
appid = %q
secret_env = "BENCH_OA_SECRET"

[wechat.app]
appid = %q
secret_env = "BENCH_APP_SECRET"

[policy]
default = "login"
upstream = "origin"

[[upstream]]
name = "origin"
url = "http://%s"

[[route]]
name = "public"
path = "/public/**"
action = "public"

[[route]]
name = "api"
path = "/api/**"
api = true
`

// profileRow saves a CPU profile of r's gateway, taken over the middle of
// a run, to o.profile (go tool pprof FILE).
func profileRow(r *row, o options) error {
	secs := max(1, int(o.duration.Seconds())-2)
	time.Sleep(time.Second) // past wrk's connection set-up
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", r.admin, secs))
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
	}
	name := strings.NewReplacer("wxgate: ", "", ", ", "-", " ", "-").Replace(r.name) + ".pprof"
	f, err := os.Create(filepath.Join(o.profile, name))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile: %w", err)
	}
	return f.Close()
}
