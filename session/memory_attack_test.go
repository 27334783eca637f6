package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMemoryJanitorEndsWithStore: a memory store no longer referenced is
// collected and its janitor goroutine ends.
func TestMemoryJanitorEndsWithStore(t *testing.T) {
	// The janitors of these stores alone, by their data's address (the
	// goroutine's first argument): other tests' stores come and go meanwhile.
	var marks []string
	running := func() int {
		buf := make([]byte, 1<<20)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) {
				count := 0
				for _, m := range marks {
					count += strings.Count(string(buf[:n]), m)
				}
				return count
			}
			buf = make([]byte, 2*len(buf))
		}
	}
	stores := make([]*Memory, 0, 20)
	for range 20 {
		m := NewMemory(time.Millisecond)
		stores = append(stores, m)
		marks = append(marks, fmt.Sprintf("(*memoryData).janitor(%p", m.d))
		_ = m.Set(context.Background(), "sess:a", []byte("v"), time.Hour)
		_, _ = m.AddMember(context.Background(), "idx:a", "s:a", time.Now().Add(time.Hour), time.Now(), 0)
		_, _, _ = m.load(context.Background(), "sess:a", func(b []byte) (any, error) { return string(b), nil })
	}
	// A goroutine just started may not be in the dump yet.
	for deadline := time.Now().Add(5 * time.Second); running() < len(stores); {
		if time.Now().After(deadline) {
			t.Fatalf("%d janitors running for the %d stores just made", running(), len(stores))
		}
		time.Sleep(time.Millisecond)
	}
	runtime.KeepAlive(stores)
	stores = nil
	deadline := time.Now().Add(10 * time.Second)
	for running() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d janitors still running 10s after their 20 stores were dropped", running())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMemoryLargeValues: values far beyond the put buffer, of each kind
// packing treats apart, come back exactly.
func TestMemoryLargeValues(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 1<<20)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	b64 := make([]byte, 1<<20+3)
	for i := range b64 {
		b64[i] = base64URL[r.IntN(64)]
	}
	var times []byte
	for i := range 20000 {
		times = append(times, time.Unix(0, r.Int64N(1<<62)).In(time.FixedZone("", (i%200-100)*60)).AppendFormat(nil, time.RFC3339Nano)...)
	}
	m := NewMemory(0)
	for name, v := range map[string][]byte{
		"random": random, "base64": b64, "times": times,
		"phrases":  bytes.Repeat([]byte(phrases[10]+phrases[0]), 40000),
		"controls": bytes.Repeat([]byte{0, 0x1d, 0x1e, 0x1f}, 1<<18),
		// The most a packed byte stands for (maxExpansion).
		"longest phrase": bytes.Repeat([]byte(slices.MaxFunc(phrases[:], func(a, b string) int { return len(a) - len(b) })), 1<<15),
		"same time":      bytes.Repeat([]byte("2026-11-23T16:06:33.123456789+08:00"), 1<<15),
	} {
		t.Run(name, func(t *testing.T) {
			if err := m.Set(ctx, "k:"+name, v, time.Hour); err != nil {
				t.Fatal(err)
			}
			got, err := m.Get(ctx, "k:"+name)
			if err != nil || !bytes.Equal(got, v) {
				t.Errorf("Get gave %d bytes (%v), want the %d set", len(got), err, len(v))
			}
			if ok, err := m.Swap(ctx, "k:"+name, got, []byte("x"), time.Hour); !ok || err != nil {
				t.Errorf("Swap from the value Get returned = %v, %v", ok, err)
			}
		})
	}
}

// TestMemoryRaceJanitor: writes and reads race the janitor on entries that
// expire as they go; a value read is always one that was written whole,
// and a Swap from what Get returned succeeds unless another writer came
// between.
func TestMemoryRaceJanitor(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(time.Millisecond)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "sess:" + strconv.Itoa(w)
			for i := range 2000 {
				v := []byte(`{"id":"` + strconv.Itoa(i) + `","rotated":"2026-11-23T16:06:33.` + strconv.Itoa(100+i%800) + `+08:00"}`)
				ttl := time.Duration(i%3) * time.Millisecond
				_ = m.Set(ctx, key, v, ttl)
				got, err := m.Get(ctx, key)
				switch {
				case errors.Is(err, ErrNotFound):
				case err != nil:
					t.Errorf("Get: %v", err)
					return
				case !bytes.Equal(got, v):
					t.Errorf("Get = %q, want %q", got, v)
					return
				default:
					if ok, err := m.Swap(ctx, key, got, v, time.Hour); err != nil || !ok && m.Count(key) != 0 {
						t.Errorf("Swap from Get's answer = %v, %v", ok, err)
						return
					}
				}
				_, _ = m.AddMember(ctx, "idx:"+strconv.Itoa(w%2), strconv.Itoa(i%40), time.Now().Add(ttl), time.Now(), 20)
				_, _ = m.Members(ctx, "idx:"+strconv.Itoa(w%2))
				if i%7 == 0 {
					_ = m.RemoveMember(ctx, "idx:"+strconv.Itoa(w%2), strconv.Itoa(i%40))
				}
				_ = m.Count("sess:")
			}
		}()
	}
	wg.Wait()
}

// TestPackComposed: values built from what packing looks for (phrases and
// their prefixes, times at any offset and precision, whole, cut or with a
// character changed, base64 runs in either alphabet with padding, op
// bytes) unpack to themselves. FuzzPack's mutations seldom make a time
// that parses.
func TestPackComposed(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	piece := func() []byte {
		switch r.IntN(8) {
		case 0:
			return []byte(phrases[r.IntN(len(phrases))])
		case 1:
			p := phrases[r.IntN(len(phrases))]
			return []byte(p[:r.IntN(len(p))])
		case 2, 3:
			y := 1880 + r.IntN(340)
			tm := time.Date(y, time.Month(1+r.IntN(12)), 1+r.IntN(31), r.IntN(24), r.IntN(60), r.IntN(60), 0, time.UTC)
			switch r.IntN(4) {
			case 0:
			case 1:
				tm = tm.Add(time.Duration(r.IntN(1e9)))
			case 2:
				tm = tm.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
			case 3:
				tm = tm.Add(time.Duration(r.IntN(1e6)) * time.Microsecond)
			}
			off := 0
			if r.IntN(2) == 0 {
				off = r.IntN(12000) - 6000
			}
			var s string
			if off == 0 && r.IntN(2) == 0 {
				s = tm.Format(time.RFC3339Nano)
			} else {
				s = tm.In(time.FixedZone("", off*60)).Format(time.RFC3339Nano)
			}
			b := []byte(s)
			if r.IntN(5) == 0 {
				b[r.IntN(len(b))] = "0123456789-:TZ+.9"[r.IntN(17)]
			}
			if r.IntN(5) == 0 {
				b = b[:r.IntN(len(b))]
			}
			return b
		case 4:
			b := make([]byte, r.IntN(40))
			for i := range b {
				b[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/="[r.IntN(67)]
			}
			return b
		case 5:
			return []byte{byte(r.IntN(0x20))}
		case 6:
			return []byte{byte(r.Uint32())}
		default:
			return []byte(`"`)
		}
	}
	for i := range 100000 {
		var v []byte
		for range r.IntN(12) {
			v = append(v, piece()...)
		}
		p := string(appendPacked(nil, v))
		got, err := unpack(nil, p)
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("%d: %q -> %q %v", i, v, got, err)
		}
		if unpackedLen(p) != len(v) || !holds(p, v) {
			t.Fatalf("%d: len/holds %q", i, v)
		}
	}
}

// TestMemoryCenturiesTTL: a ttl or a member's end centuries ahead (a
// lifetime configured as "forever") keeps the entry rather than wrapping
// past int64 nanoseconds to an expiry in the past, and a snapshot carries
// it.
func TestMemoryCenturiesTTL(t *testing.T) {
	ctx := context.Background()
	const forever = time.Duration(math.MaxInt64)
	now := time.Now()
	m := NewMemory(0)
	if err := m.Set(ctx, "sess:a", []byte("v"), forever); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.SetNX(ctx, "sess:b", []byte("v"), 250*365*24*time.Hour); !ok || err != nil {
		t.Fatalf("SetNX = %v, %v", ok, err)
	}
	if _, err := m.AddMember(ctx, "idx:user:o", "s:a", now.Add(forever), now, 0); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, m *Memory) {
		t.Helper()
		for _, k := range []string{"sess:a", "sess:b"} {
			if got, err := m.Get(ctx, k); err != nil || string(got) != "v" {
				t.Errorf("Get(%s) = %q, %v; want v", k, got, err)
			}
		}
		if got, err := m.Members(ctx, "idx:user:o"); err != nil || !slices.Equal(got, []string{"s:a"}) {
			t.Errorf("Members = %v, %v; want [s:a]", got, err)
		}
		if ok, err := m.Swap(ctx, "sess:a", []byte("v"), []byte("v"), forever); !ok || err != nil {
			t.Errorf("Swap = %v, %v; want true", ok, err)
		}
	}
	check(t, m)
	path := filepath.Join(t.TempDir(), "snapshot")
	if _, err := m.SaveSnapshot(path, OriginServe); err != nil {
		t.Fatal(err)
	}
	loaded := NewMemory(0)
	if n, err := loaded.LoadSnapshot(path, OriginServe); n != 3 || err != nil {
		t.Fatalf("LoadSnapshot = %d, %v; want 3", n, err)
	}
	check(t, loaded)
}
