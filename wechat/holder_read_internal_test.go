package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wxgate/wxgate/session"
)

// heldStore hands out each read of the shared token only when let go, and
// says when it has read one.
type heldStore struct {
	SharedStore
	read  chan struct{}
	letGo chan struct{}
}

func (s *heldStore) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := s.SharedStore.Get(ctx, key)
	if strings.HasPrefix(key, "apptoken:current:") {
		s.read <- struct{}{}
		<-s.letGo
	}
	return b, err
}

// TestReadBeginsAfterTheCallerAsks: Get's callers share reads of the store,
// but a caller who asks while a read is under way gets the next read, not
// that one: the token it read may have been replaced meanwhile (Invalidate
// on another replica answers the new one), and a backend that asks right
// after must not get the token it just reported.
func TestReadBeginsAfterTheCallerAsks(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	mem := session.NewMemory(0)
	put := func(tok string) {
		b, _ := json.Marshal(AppToken{AccessToken: Secret(tok), FetchedAt: now, ExpiresAt: now.Add(2 * time.Hour)})
		if err := mem.Set(ctx, "apptoken:current:wxapp", b, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	put("T1")
	store := &heldStore{SharedStore: mem, read: make(chan struct{}), letGo: make(chan struct{})}
	h := NewHolder(New(Config{}), App{AppID: "wxapp"}, store, HolderConfig{
		IsNotFound: func(err error) bool { return errors.Is(err, session.ErrNotFound) },
		Now:        func() time.Time { return now },
	})
	get := func() <-chan string {
		ch := make(chan string, 1)
		go func() {
			tok, err := h.Get(ctx)
			if err != nil {
				t.Error(err)
				ch <- ""
				return
			}
			ch <- tok.AccessToken.Reveal()
		}()
		return ch
	}

	first := get()
	<-store.read // T1 read, not yet answered
	put("T2")
	second := get()
	for !h.hasQueuedRead() {
		runtime.Gosched()
	}
	store.letGo <- struct{}{}
	if got := <-first; got != "T1" {
		t.Errorf("first caller: %q, want T1", got)
	}
	var got string
	select {
	case <-store.read:
		store.letGo <- struct{}{}
		got = <-second
	case got = <-second: // answered without a read of its own
	}
	if got != "T2" {
		t.Errorf("caller who asked after T2 was shared: %q, want T2 (a read begun before it asked answered it)", got)
	}
}

func (h *Holder) hasQueuedRead() bool {
	h.rmu.Lock()
	defer h.rmu.Unlock()
	return h.queued != nil
}
