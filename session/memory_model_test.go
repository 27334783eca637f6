package session

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

// modelValues are the values FuzzMemoryModel stores: records as packed and
// their twins that differ only in how a time or a run is spelled, so that a
// Swap from one to the other must fail.
func modelValues(t testing.TB) [][]byte {
	vs := [][]byte{nil, {}, []byte("x")}
	for _, v := range packCases(t) {
		vs = append(vs, v)
	}
	slices.SortFunc(vs, bytes.Compare)
	vs = slices.CompactFunc(vs, bytes.Equal)
	return append(vs,
		[]byte(`"2026-11-23T16:06:33Z"`),
		[]byte(`"2026-11-23T16:06:33+00:00"`),
		[]byte(`"2026-11-23T18:06:33+02:00"`),
		[]byte(`"2026-11-23T16:06:33.000Z"`),
		[]byte(`"2026-11-23T16:06:33.1Z"`),
		[]byte(`"2026-11-23T16:06:33.10Z"`),
		[]byte(`"2200-12-31T23:59:59.999999999-99:59"`),
		[]byte(`"1900-01-01T00:00:00+99:59"`),
		[]byte("AAAAAAAAAAAA"),
		[]byte("AAAAAAAAAAAA="),
		[]byte("AAAAAAAAAAA+"),
		[]byte("AAAAAAAAAAA/"),
		[]byte("\x01\x05hello"), // looks packed
		[]byte("\x00raw"),       // looks packed raw
		bytes.Repeat([]byte(phrases[10]), 100),
		bytes.Repeat([]byte(`"2026-11-23T16:06:33.123456789+08:00"`), 50),
	)
}

// FuzzMemoryModel runs a sequence of writes and reads, decoded from the
// input, on the memory store and on a plain map, and compares every answer;
// then a snapshot of the store loaded into another must answer alike.
func FuzzMemoryModel(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add(bytes.Repeat([]byte{6, 1, 0, 6, 1, 1, 6, 1, 2, 6, 1, 3, 6, 1, 4, 6, 1, 5, 6, 1, 6, 6, 1, 7, 6, 1, 8, 6, 1, 9, 6, 1, 10, 6, 1, 11, 6, 1, 12, 6, 1, 13, 6, 1, 14, 6, 1, 15, 6, 1, 16, 6, 1, 17, 7, 1, 3, 8, 1, 0}, 2))
	values := modelValues(f)
	f.Fuzz(func(t *testing.T, prog []byte) {
		runMemoryModel(t, prog, values)
	})
}

func runMemoryModel(t *testing.T, prog []byte, values [][]byte) {
	ctx := context.Background()
	keys := []string{"sess:a", "sess:b", "fam:c", "idx:user:d", "idx:user:e", "x"}
	m := newMemory()
	now := time.Now()
	type set map[string]int64
	vals := map[string][]byte{}
	sets := map[string]set{}
	var clock int64 // member times, distinct and rising
	next := func() byte {
		if len(prog) == 0 {
			return 0
		}
		b := prog[0]
		prog = prog[1:]
		return b
	}
	for step := 0; len(prog) > 0; step++ {
		op, key, arg := next()%10, keys[int(next())%len(keys)], int(next())
		v := values[arg%len(values)]
		keyBuf := []byte(key) // reused below: the store must own its keys
		k := aliased(keyBuf)
		switch op {
		case 0:
			if err := m.Set(ctx, k, v, time.Hour); err != nil {
				t.Fatal(err)
			}
			vals[key] = bytes.Clone(v)
			delete(sets, key)
		case 1:
			ok, err := m.SetNX(ctx, k, v, time.Hour)
			_, inV := vals[key]
			_, inS := sets[key]
			if err != nil || ok == (inV || inS) {
				t.Fatalf("step %d: SetNX(%s) = %v, %v; present %v", step, key, ok, err, inV || inS)
			}
			if ok {
				vals[key] = bytes.Clone(v)
			}
		case 2:
			ok, err := m.Replace(ctx, k, v, time.Hour)
			_, inV := vals[key]
			_, inS := sets[key]
			if err != nil || ok != (inV || inS) {
				t.Fatalf("step %d: Replace(%s) = %v, %v; present %v", step, key, ok, err, inV || inS)
			}
			if ok {
				vals[key] = bytes.Clone(v)
				delete(sets, key)
			}
		case 3, 4:
			old := v
			if op == 4 {
				if cur, ok := vals[key]; ok {
					old = cur
				}
			}
			nv := values[(arg/7)%len(values)]
			ok, err := m.Swap(ctx, k, old, nv, time.Hour)
			cur, in := vals[key]
			if want := in && bytes.Equal(cur, old); err != nil || ok != want {
				t.Fatalf("step %d: Swap(%s, %q -> %q) = %v, %v; want %v (holding %q)", step, key, old, nv, ok, err, want, cur)
			}
			if ok {
				vals[key] = bytes.Clone(nv)
			}
		case 5:
			if err := m.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			delete(vals, key)
			delete(sets, key)
		case 6:
			clock += 1 + int64(arg)
			name := "s:" + strconv.Itoa(arg%24)
			limit := arg % 5 * 4
			until := now.Add(time.Hour).UnixNano() + clock
			nameBuf := []byte(name) // a member name may alias a buffer too
			over, err := m.AddMember(ctx, k, aliased(nameBuf), time.Unix(0, until), now, limit)
			if err != nil {
				t.Fatal(err)
			}
			overwrite(nameBuf)
			s := sets[key]
			if s == nil {
				s = set{}
				sets[key] = s
				delete(vals, key)
			}
			s[name] = max(s[name], until)
			var want []string
			if limit > 0 {
				want = modelOver(s, limit, name)
			}
			if !slices.Equal(over, want) {
				t.Fatalf("step %d: AddMember(%s, %s, limit %d) over = %v, want %v", step, key, name, limit, over, want)
			}
		case 7:
			name := "s:" + strconv.Itoa(arg%24)
			if err := m.RemoveMember(ctx, k, name); err != nil {
				t.Fatal(err)
			}
			if s := sets[key]; s != nil {
				delete(s, name)
				if len(s) == 0 {
					delete(sets, key)
				}
			}
		case 8:
			path := filepath.Join(t.TempDir(), "snapshot")
			if _, err := m.SaveSnapshot(path, OriginServe); err != nil {
				t.Fatal(err)
			}
			m = newMemory()
			if _, err := m.LoadSnapshot(path, OriginServe); err != nil {
				t.Fatal(err)
			}
		}
		overwrite(keyBuf)
		checkMemoryModel(t, step, m, keys, vals, func(key string) map[string]int64 { return sets[key] })
	}
}

func checkMemoryModel(t *testing.T, step int, m *Memory, keys []string, vals map[string][]byte, sets func(string) map[string]int64) {
	ctx := context.Background()
	for _, key := range keys {
		got, err := m.Get(ctx, key)
		want, in := vals[key]
		if !in {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("step %d: Get(%s) = %q, %v; want ErrNotFound", step, key, got, err)
			}
		} else if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("step %d: Get(%s) = %q, %v; want %q", step, key, got, err, want)
		}
		members, err := m.Members(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(members)
		var wantMembers []string
		if s := sets(key); s != nil {
			wantMembers = sortedKeys(s)
		}
		if diff := gocmp.Diff(wantMembers, members); diff != "" {
			t.Fatalf("step %d: Members(%s) (-want +got):\n%s", step, key, diff)
		}
	}
	n := 0
	for _, key := range keys {
		if _, in := vals[key]; in || sets(key) != nil {
			n++
		}
	}
	if got := m.Count(""); got != n {
		t.Fatalf("step %d: Count = %d, want %d", step, got, n)
	}
}

// TestMemoryModel runs FuzzMemoryModel's check on random programs.
func TestMemoryModel(t *testing.T) {
	values := modelValues(t)
	r := rand.New(rand.NewPCG(10, 7))
	for i := range 200 {
		prog := make([]byte, 3*(50+r.IntN(200)))
		for j := range prog {
			prog[j] = byte(r.Uint32())
			if j%3 == 0 && prog[j]%10 == 8 && r.IntN(8) != 0 {
				prog[j]++ // a snapshot now and then: they cost a file each
			}
		}
		t.Run(strconv.Itoa(i), func(t *testing.T) { runMemoryModel(t, prog, values) })
	}
}
