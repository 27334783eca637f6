package session

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testStore is the conformance suite every Store runs.
func testStore(t *testing.T, s Store) {
	ctx := context.Background()
	t.Run("get missing", func(t *testing.T) {
		if _, err := s.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(missing) err = %v, want ErrNotFound", err)
		}
	})
	t.Run("set get delete", func(t *testing.T) {
		buf := []byte("value")
		if err := s.Set(ctx, "k1", buf, time.Minute); err != nil {
			t.Fatal(err)
		}
		buf[0] = 'X' // the store must have copied
		got, err := s.Get(ctx, "k1")
		if err != nil || string(got) != "value" {
			t.Errorf("Get(k1) = %q, %v; want value", got, err)
		}
		if err := s.Delete(ctx, "k1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "k1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after Delete err = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "k1"); err != nil {
			t.Errorf("Delete(absent) = %v, want nil", err)
		}
	})
	t.Run("expiry", func(t *testing.T) {
		if err := s.Set(ctx, "short", []byte("v"), 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := s.Get(ctx, "short")
			if errors.Is(err, ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("value outlived its ttl by 5s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := s.Set(ctx, "zero", []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "zero"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a zero ttl kept the value: err = %v", err)
		}
	})
	t.Run("setnx once", func(t *testing.T) {
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.SetNX(ctx, "nx", []byte{1}, time.Minute)
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Errorf("concurrent SetNX winners = %d, want 1", wins.Load())
		}
	})
}

func TestMemoryStore(t *testing.T) { testStore(t, NewMemory(10*time.Millisecond)) }
