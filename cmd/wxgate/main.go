// Command wxgate is a reverse-proxy authentication gateway for WeChat login.
//
//	wxgate serve    --config gateway.toml   run the gateway
//	wxgate dev      [--config gateway.toml] gateway + WeChat simulator + demo upstream
//	wxgate simulate --listen ADDR --config gateway.toml   the simulator alone
//	wxgate check    --config gateway.toml [--explain "GET https://host/path"]
//	wxgate keygen   [--alg ES256|RS256|EdDSA] [--out FILE]
//	wxgate version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wxgate/wxgate/proxy"
	"github.com/wxgate/wxgate/session"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: wxgate <command> [flags]

commands:
  serve     run the gateway (--config gateway.toml)
  dev       run gateway, WeChat simulator and demo upstream together
  simulate  run the WeChat simulator alone (--listen ADDR --config FILE)
  check     validate a config (--config FILE [--explain "GET https://host/path"])
  keygen    write a new token signing key (--alg ES256|RS256|EdDSA, --out FILE)
  version   print the version
`

// earlyHangup holds a SIGHUP that arrives before runGateway listens for
// it (while the config is read and the gateway built): unhandled, it would
// end the process. runGateway reloads for it once it can.
var earlyHangup = make(chan os.Signal, 1)

func main() {
	signal.Notify(earlyHangup, syscall.SIGHUP)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(rest, stdout, stderr)
	case "dev":
		return dev(rest, stdout, stderr)
	case "simulate":
		return simulate(rest, stdout, stderr)
	case "check":
		return check(rest, stdout, stderr)
	case "keygen":
		return keygen(rest, stdout, stderr)
	case "version", "--version", "-v":
		return printVersion(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "wxgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("wxgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // parseFlags prints it, to stdout for --help
	return fs
}

// parseFlags parses args into fs and returns the exit code to stop with,
// or -1 to go on: --help (or -h) prints the command's usage to stdout and
// stops with 0, as a request answered; a bad flag, 2. No command takes an
// argument that is not a flag: "wxgate check prod.toml" would otherwise
// check gateway.toml, ignoring every flag after the file name, and say ok.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) int {
	err := fs.Parse(args)
	if err == nil && fs.NArg() == 0 {
		return -1
	}
	code := 2
	switch {
	case err == nil:
		hint := ""
		if fs.Lookup("config") != nil {
			hint = " (a config file is --config FILE)"
		}
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q%s\n", fs.Name(), fs.Arg(0), hint)
	case errors.Is(err, flag.ErrHelp):
		code = 0
		fs.SetOutput(stdout)
	}
	fmt.Fprintf(fs.Output(), "usage of %s:\n", fs.Name())
	fs.PrintDefaults()
	return code
}

// loadAndValidate loads a config, lets adjust change it, provisions it
// (reading its secrets and files, parsing its values) and validates it
// (proxy.Check), printing one line per warning and problem, each with the
// file's line. check, serve and dev all come through here: what check
// accepts, serve starts with, once the secrets are set. With
// unsetSecretsWarn (check without --strict) a secret's unset variable is
// a warning. It writes nothing: the signing key and the snapshot are
// proxy.New's.
func loadAndValidate(path string, w io.Writer, adjust func(*proxy.Config), unsetSecretsWarn bool) (*proxy.Config, bool) {
	cfg, problems := proxy.Check(path, proxy.CheckOptions{Env: os.Environ(), Adjust: adjust, UnsetSecretsWarn: unsetSecretsWarn})
	for _, p := range problems {
		fmt.Fprintln(w, p)
	}
	return cfg, cfg != nil
}

func printLines(w io.Writer, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(w, line)
	}
}

func serve(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", stderr)
	path := fs.String("config", "gateway.toml", "configuration file")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	cfg, ok := loadAndValidate(*path, stderr, nil, false)
	if !ok {
		return 1
	}
	log := proxy.NewLogger(stderr, cfg, proxy.LogJSON)
	session.LogRedisTo(log)
	gw, err := proxy.New(cfg, proxy.Options{Logger: log})
	if err != nil {
		log.Error("starting", "error", err)
		return 1
	}
	if err := runGateway(gw, cfg, log, nil); err != nil {
		log.Error("serving", "error", err)
		return 1
	}
	return 0
}

// runGateway listens, calls ready (if not nil) once both listeners are
// bound, and serves until SIGINT or SIGTERM. Then it drains (issue 9): not
// ready but still serving for [server] shutdown_delay, so that load
// balancers stop sending traffic before the port closes; then it stops
// accepting and waits up to shutdown_timeout for the requests in flight.
// A further signal ends the wait it arrives in: the delay, or the drain
// (whose requests are then cut). It shuts gw down on every way out,
// failures included: proxy.New consumed the memory store's snapshot, and
// only Shutdown writes it again.
func runGateway(gw *proxy.Server, cfg *proxy.Config, log *slog.Logger, ready func()) error {
	// Before ready: a SIGTERM right after it would otherwise kill the
	// process without the Shutdown that writes the snapshot.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	// SIGHUP reloads the config (proxy.Server.Reload), from the start to
	// the exit: unhandled, it would end the process without its Shutdown.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	signal.Stop(earlyHangup)
	select {
	case s := <-earlyHangup:
		hup <- s
	default:
	}
	stopHup := make(chan struct{})
	defer close(stopHup)
	go reloadOnHangup(gw, hup, stopHup, log)
	timeout := cfg.Server.ShutdownTimeout
	pub, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return errors.Join(fmt.Errorf("public listener: %w", err), shutdown(gw, timeout, nil, log))
	}
	adm, err := net.Listen("tcp", cfg.Server.AdminListen)
	if err != nil {
		pub.Close()
		return errors.Join(fmt.Errorf("admin listener: %w", err), shutdown(gw, timeout, nil, log))
	}
	log.Info("wxgate listening", "public", pub.Addr().String(), "admin", adm.Addr().String(), "public_url", cfg.Server.PublicURL)
	if ready != nil {
		ready()
	}
	errc := make(chan error, 1)
	go func() { errc <- gw.Serve(pub, adm) }()
	select {
	case err := <-errc:
		return errors.Join(err, shutdown(gw, timeout, sig, log))
	case s := <-sig:
		delay := cfg.Server.ShutdownDelayOrDefault()
		if delay > 0 {
			log.Info("shutting down: not ready, serving on until shutdown_delay ends", "signal", s.String(), "shutdown_delay", delay.String())
		} else {
			log.Info("shutting down", "signal", s.String())
		}
		gw.Drain()
		if err := waitDelay(delay, sig, errc, log); err != nil {
			return errors.Join(err, shutdown(gw, timeout, sig, log))
		}
	}
	return shutdown(gw, timeout, sig, log)
}

// reloadOnHangup reloads gw's config at each SIGHUP on hup until stop is
// closed. A SIGHUP during a reload is kept (hup holds one) and reloads
// again afterwards: the file may have changed since the reload began.
// Reload logs what it did and every problem of a refused file itself.
func reloadOnHangup(gw *proxy.Server, hup <-chan os.Signal, stop <-chan struct{}, log *slog.Logger) {
	for {
		select {
		case <-stop:
			return
		case <-hup:
			log.Info("SIGHUP: reloading the config")
			_ = gw.Reload()
		}
	}
}

// waitDelay waits for delay, or until a further signal skips the rest of
// it, or Serve fails (its error is returned).
func waitDelay(delay time.Duration, sig <-chan os.Signal, errc <-chan error, log *slog.Logger) error {
	if delay <= 0 {
		return nil
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case s := <-sig:
		log.Info("a second signal: skipping the rest of the shutdown delay", "signal", s.String())
	case err := <-errc:
		return err
	}
	return nil
}

// errSignalCut is why a drain ended early: a signal during it.
var errSignalCut = errors.New("a further signal during the drain")

// shutdown closes the listeners, drains gw for up to timeout (a signal on
// sig, if not nil, ends the wait at once) and writes its snapshot.
// Requests cut when the wait ends are logged by gw as a warning; the exit
// stays clean, since the operator asked for the stop and set its bound.
func shutdown(gw *proxy.Server, timeout time.Duration, sig <-chan os.Signal, log *slog.Logger) error {
	ctx, cancel := context.WithTimeoutCause(context.Background(), timeout, errors.New("shutdown_timeout "+timeout.String()+" passed"))
	defer cancel()
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case s := <-sig:
			log.Warn("a further signal: cutting the requests in flight", "signal", s.String())
			cancelCause(errSignalCut)
		case <-done:
		}
	}()
	if err := gw.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
