package proxy_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wxgate/wxgate/session"
)

// unreadableSessions is a store whose sessions stop decoding while fail is
// set (a record an older or newer wxgate wrote, a value that is not
// sealed); deleting them still works.
type unreadableSessions struct {
	session.Store
	fail atomic.Bool
}

func (s *unreadableSessions) Get(ctx context.Context, key string) ([]byte, error) {
	if s.fail.Load() && strings.HasPrefix(key, "sess:") {
		return nil, errors.New("test: the session record does not decode")
	}
	return s.Store.Get(ctx, key)
}

// TestLogoutOfAnUnreadableSession: a logout reads the session only to name
// its user in the log; a session that cannot be read still ends, instead
// of the logout failing with 503 and the session living on.
func TestLogoutOfAnUnreadableSession(t *testing.T) {
	store := &unreadableSessions{Store: session.NewMemory(0)}
	e := newEnvOpts(t, envOptions{store: store})
	b := e.browser(weChatUA)
	b.login("/", "alice")
	cookie := b.cookie("wxgate_session")
	store.fail.Store(true)
	resp := b.do(http.MethodPost, "/_wxgate/logout", strings.NewReader("rd=%2F"),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": e.url})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("logout of a session that cannot be read: %d, want 303", resp.StatusCode)
	}
	store.fail.Store(false)
	other := e.browser(weChatUA)
	resp = other.do(http.MethodGet, "/", nil, map[string]string{"Cookie": "wxgate_session=" + cookie})
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Error("the session is still served after its logout")
	}
}
