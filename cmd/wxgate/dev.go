package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wxgate/wxgate/proxy"
	"github.com/wxgate/wxgate/wechat"
	"github.com/wxgate/wxgate/wechat/wechatsim"
)

// openPlatformID binds every app the simulator registers from a config to
// one open-platform account, so a user has one unionid across them.
const openPlatformID = "wxgate-simulated-open-platform"

// simApps registers the config's apps with the simulator: same appids and
// secrets (cfg is provisioned), the public URL's host as the authorization
// domain.
func simApps(cfg *proxy.Config) ([]wechatsim.App, error) {
	pu, err := url.Parse(cfg.Server.PublicURL)
	if err != nil {
		return nil, err
	}
	kinds := []struct {
		app *wechat.AppConfig
		typ wechatsim.AppType
	}{
		{&cfg.WeChat.OfficialAccount, wechatsim.OfficialAccount},
		{&cfg.WeChat.Website, wechatsim.Website},
		{&cfg.WeChat.MiniProgram, wechatsim.MiniProgram},
		{&cfg.WeChat.MobileApp, wechatsim.MobileApp},
	}
	var apps []wechatsim.App
	for _, k := range kinds {
		app := k.app.App()
		if app.AppID == "" {
			continue
		}
		apps = append(apps, wechatsim.App{
			AppID: app.AppID, Secret: app.Secret.Reveal(), Type: k.typ,
			OpenPlatformID: openPlatformID, Domain: pu.Hostname(),
		})
	}
	return apps, nil
}

// devSecrets gives every configured app whose secret does not resolve a
// random one: in dev the simulator is WeChat, so any secret both sides
// share will do. The config's Provision then reads each app's secret
// again (a variable or a file; in dev only).
func devSecrets(cfg *proxy.Config) {
	for _, a := range []*wechat.AppConfig{&cfg.WeChat.OfficialAccount, &cfg.WeChat.Website, &cfg.WeChat.MiniProgram, &cfg.WeChat.MobileApp} {
		if a.Provision() == nil {
			continue
		}
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		*a = wechat.AppConfig{AppID: a.AppID, Secret: hex.EncodeToString(b), VerifyFile: a.VerifyFile}
	}
}

// keepDevSecrets gives every app of cfg whose secret does not resolve the
// secret devSecrets gave the same app of started, the running config, if
// it has the same appid: the simulator knows no other. Without it each
// reload in dev would draw new secrets, and be refused for changing them.
func keepDevSecrets(cfg, started *proxy.Config) {
	now := []*wechat.AppConfig{&cfg.WeChat.OfficialAccount, &cfg.WeChat.Website, &cfg.WeChat.MiniProgram, &cfg.WeChat.MobileApp}
	then := []*wechat.AppConfig{&started.WeChat.OfficialAccount, &started.WeChat.Website, &started.WeChat.MiniProgram, &started.WeChat.MobileApp}
	for i, a := range now {
		if a.Provision() == nil || a.AppID != then[i].AppID {
			continue
		}
		*a = *then[i]
	}
}

// withLoopbackTwin adds to hosts the other loopback name of a public URL
// on localhost or 127.0.0.1, with its port: a newcomer who opens the other
// one logs in there too, through the public URL's callback and a hand-off
// ticket, the way a site with several hosts does.
func withLoopbackTwin(hosts []string, publicURL string) []string {
	u, err := url.Parse(publicURL)
	if err != nil {
		return hosts
	}
	twin := map[string]string{"localhost": "127.0.0.1", "127.0.0.1": "localhost"}[u.Hostname()]
	if twin == "" {
		return hosts
	}
	if p := u.Port(); p != "" {
		twin = net.JoinHostPort(twin, p)
	}
	if slices.Contains(hosts, twin) {
		return hosts
	}
	return append(slices.Clip(hosts), twin)
}

// devStatePath is where `wxgate dev` keeps a file the config names at p: in
// a dev/ directory beside it (".wxgate/sessions.snapshot" becomes
// ".wxgate/dev/sessions.snapshot"). In dev anyone logs in as any openid
// through the simulator, so its sessions and the tokens its key signs must
// never reach `wxgate serve` in the same directory (issue 8); apart, and
// marked with their origin, they cannot by accident. p is not empty.
func devStatePath(p string) string {
	return filepath.Join(filepath.Dir(p), "dev", filepath.Base(p))
}

func dev(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dev", stderr)
	path := fs.String("config", "gateway.toml", "configuration file")
	simAddr := fs.String("sim-listen", "localhost:9300", "simulator address")
	demoAddr := fs.String("demo-listen", "127.0.0.1:9400", "demo upstream address")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	// Listen first, so the simulator's and demo's real addresses (with
	// ":0", a free port) go into the config.
	simLn, err := net.Listen("tcp", *simAddr)
	if err != nil {
		fmt.Fprintln(stderr, "wxgate dev: simulator listener:", err)
		return 1
	}
	defer simLn.Close()
	demoLn, err := net.Listen("tcp", *demoAddr)
	if err != nil {
		fmt.Fprintln(stderr, "wxgate dev: demo upstream listener:", err)
		return 1
	}
	defer demoLn.Close()
	simBase := "http://" + listenerHost(*simAddr, simLn)
	demoURL := "http://" + demoLn.Addr().String()
	// adjust points the config at the simulator and the demo upstream;
	// secrets gives the apps whose secret does not resolve one.
	adjust := func(c *proxy.Config, secrets func(*proxy.Config)) {
		c.Server.Dev = true
		// No load balancer waits on dev: Ctrl-C stops it at once.
		var noDelay time.Duration
		c.Server.ShutdownDelay = &noDelay
		// What dev writes stays apart from serve's (issue 8).
		if c.Session.SnapshotFile != "" {
			c.Session.SnapshotFile = devStatePath(c.Session.SnapshotFile)
		}
		c.Tokens.SigningKeyFile = devStatePath(c.Tokens.SigningKeyFile)
		c.WeChat.APIBase, c.WeChat.OpenBase = simBase, simBase
		c.Server.HandoffHosts = withLoopbackTwin(c.Server.HandoffHosts, c.Server.PublicURL)
		secrets(c)
		for i := range c.Upstreams {
			if c.Upstreams[i].Name == "demo" {
				c.Upstreams[i].URL = demoURL
			}
		}
	}
	cfg, ok := loadAndValidate(*path, stderr, func(c *proxy.Config) { adjust(c, devSecrets) }, false)
	if !ok {
		return 1
	}
	log := proxy.NewLogger(stderr, cfg, proxy.LogText)
	apps, err := simApps(cfg)
	if err != nil {
		log.Error("registering apps with the simulator", "error", err)
		return 1
	}
	sim := wechatsim.New(apps...)
	simSrv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	demoSrv := &http.Server{Handler: DemoUpstream(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = simSrv.Serve(simLn) }()
	go func() { _ = demoSrv.Serve(demoLn) }()

	// A reload keeps the secrets the simulator was given at the start.
	reload := func(c *proxy.Config) { adjust(c, func(c *proxy.Config) { keepDevSecrets(c, cfg) }) }
	gw, err := proxy.New(cfg, proxy.Options{Logger: log, Adjust: reload})
	if err != nil {
		log.Error("starting", "error", err)
		return 1
	}
	banner := func() {
		fmt.Fprintf(stdout, `
wxgate dev is running:
  open            %s/
  simulator       %s   (WeChat stand-in; apps: %d)
  demo upstream   %s
  metrics         http://%s/metrics

In a desktop browser you get the QR login page (with [wechat.website]; else
the "open in WeChat" page): pick a test user in the simulator's QR page, or
follow the dev-only link that runs the in-WeChat login. Or, as WeChat's browser:
  curl -i -A 'Mozilla/5.0 MicroMessenger/8.0.49' %s/
Press Ctrl-C to stop.
`, cfg.Server.PublicURL, simBase, len(apps), demoURL, cfg.Server.AdminListen, cfg.Server.PublicURL)
	}
	err = runGateway(gw, cfg, log, banner)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = simSrv.Shutdown(ctx)
	_ = demoSrv.Shutdown(ctx)
	if err != nil {
		log.Error("serving", "error", err)
		return 1
	}
	return 0
}

// listenerHost is the address to tell browsers: the host as the flag gave
// it (localhost stays localhost) with the port actually bound.
func listenerHost(flagAddr string, ln net.Listener) string {
	host, _, err := net.SplitHostPort(flagAddr)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if err != nil || host == "" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func simulate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("simulate", stderr)
	listen := fs.String("listen", "localhost:9300", "address to listen on")
	path := fs.String("config", "gateway.toml", "configuration whose apps to register")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	apps, ok := loadSimApps(*path, stderr)
	if !ok {
		return 1
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "wxgate simulate:", err)
		return 1
	}
	fmt.Fprintf(stdout, "WeChat simulator on http://%s with %d apps\n", ln.Addr(), len(apps))
	srv := &http.Server{Handler: wechatsim.New(apps...), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, "wxgate simulate:", err)
		return 1
	}
	return 0
}

// loadSimApps reads the apps of the config at path for the simulator,
// printing its problems and warnings.
func loadSimApps(path string, stderr io.Writer) ([]wechatsim.App, bool) {
	cfg, warnings, err := proxy.LoadConfig(path, os.Environ())
	if err != nil {
		printLines(stderr, err)
		return nil, false
	}
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	// Only the apps' secrets: the simulator needs nothing else of the
	// config, and the gateway it stands in for may run elsewhere. An app
	// whose secret does not resolve (the shipped gateway.toml on a machine
	// without the production secrets) gets one made up, as in dev; a
	// gateway elsewhere cannot know it, hence the warning.
	if err := cfg.WeChat.Provision(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "warning: %s: %s; the simulator made up a secret for the app (set the secret for both the simulator and the gateway to share one)\n", path, line)
		}
		devSecrets(cfg)
		if err := cfg.WeChat.Provision(); err != nil {
			printLines(stderr, err)
			return nil, false
		}
	}
	apps, err := simApps(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "wxgate simulate:", err)
		return nil, false
	}
	return apps, true
}
