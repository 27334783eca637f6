// Package redistest starts a real redis-server for tests, on a free
// loopback port. Where redis-server is not installed the test is skipped,
// unless WXGATE_REQUIRE_REDIS is set (CI sets it), and then it fails.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a running redis-server.
type Server struct {
	Addr string
	t    testing.TB
	dir  string
	args []string
	cmd  *exec.Cmd
	// conf, for a Sentinel, is its config file: the first argument, and
	// rewritten by the Sentinel as it learns.
	conf string
	// ready is the log line that says the server accepts connections.
	ready string
}

// Start starts redis-server, with extra arguments (such as
// "--requirepass", "pw"), and stops it at cleanup. Its data lives in an
// append-only file synced on every write, so Stop then Restart keeps it, as
// a production Redis with persistence would.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	need(t, "redis-server")
	return start(t, freePort(t, false), args...)
}

// start runs redis-server on addr with its own data directory.
func start(t testing.TB, addr string, args ...string) *Server {
	t.Helper()
	s := &Server{Addr: addr, t: t, dir: t.TempDir(), args: args, ready: "Ready to accept connections"}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// need skips the test when a Redis program is not installed, or fails it
// when WXGATE_REQUIRE_REDIS is set (CI sets it).
func need(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("WXGATE_REQUIRE_REDIS") != "" {
				t.Fatalf("%s is not installed and WXGATE_REQUIRE_REDIS is set", p)
			}
			t.Skipf("%s not installed (apt-get install redis-server)", p)
		}
	}
}

// freePort returns a free loopback address. With bus, the port 10000 above
// it (a Cluster node's bus) is free too.
func freePort(t testing.TB, bus bool) string {
	t.Helper()
	for try := 0; try < 50; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		port := ln.Addr().(*net.TCPAddr).Port
		if !bus {
			ln.Close()
			return addr
		}
		if port+10000 > 65535 {
			ln.Close()
			continue
		}
		busLn, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000))
		ln.Close()
		if err != nil {
			continue
		}
		busLn.Close()
		return addr
	}
	t.Fatal("no free loopback port pair for a Cluster node")
	return ""
}

// Restart starts the server again on the same port after Stop.
func (s *Server) Restart() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	var args []string
	if s.conf != "" {
		args = []string{s.conf, "--sentinel", "--port", port, "--bind", "127.0.0.1", "--dir", s.dir}
	} else {
		args = []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
			"--appendfsync", "always", "--dir", s.dir, "--protected-mode", "yes"}
	}
	args = append(args, s.args...)
	s.cmd = exec.Command("redis-server", args...)
	out, _ := s.cmd.StdoutPipe()
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), s.ready) {
				close(ready)
				signalled = true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		s.t.Fatalf("redis-server on %s did not become ready", s.Addr)
	}
}

// Stop shuts the server down (SIGTERM); Restart brings its data back.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Kill ends the server at once (SIGKILL), as a crash or a lost machine
// would: no shutdown, no last write to disk.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Pause stops the process (SIGSTOP) without closing its connections: a
// server that hangs. Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		s.t.Fatalf("%s is not running", s)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("%s: %v", s, err)
	}
}

// String is the server's address.
func (s *Server) String() string { return fmt.Sprintf("redis-server at %s", s.Addr) }
