package proxy

import (
	"testing"
	"time"
)

// TestRefreshPauseAnyFailureCount: the failure count comes from the stored
// login; whatever it holds (a snapshot edited by hand, a record from a
// future version), the pause stays within its bounds instead of panicking
// on a negative shift in a background goroutine, which would end the
// process.
func TestRefreshPauseAnyFailureCount(t *testing.T) {
	s := &Server{cfg: &Config{}}
	s.cfg.Session.RefreshBackoff = time.Second
	for _, n := range []int{-1 << 62, -3, 0, 1, 5, 1 << 62} {
		if d := s.refreshPause(n); d < 800*time.Millisecond || d > s.maxRefreshPause() {
			t.Errorf("refreshPause(%d) = %s, want within [0.8s, %s]", n, d, s.maxRefreshPause())
		}
	}
}
