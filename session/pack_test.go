package session

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxgate/wxgate/internal/secret"
)

// packCases are values the memory store must give back exactly: records
// as the Manager writes them, in UTC and in other zones, and what packing
// must leave alone or escape.
func packCases(t testing.TB) map[string][]byte {
	shanghai := time.FixedZone("CST", 8*3600)
	record := func(now time.Time, tokens bool) []byte {
		s := Session{
			Identity: Identity{OpenID: "oX9dw5Ab3_-xYz0123456789AbCd", UnionID: "o6_bmjAbCdEfGhIjKlMnOpQrStUv", AppID: "wx1a2b3c4d5e6f7a8b", Scope: "snsapi_userinfo",
				Nickname: "微信用户小明", Avatar: "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTKabc/132"},
			Created: now, LastSeen: now.Add(90 * time.Second), Ends: now.Add(7 * 24 * time.Hour),
		}
		if tokens {
			s.Tokens = &Tokens{AccessToken: secret.Secret("83_vIL4ZmAbU7fXk-" + strings.Repeat("aZ09", 23)), ExpiresAt: now.Add(2 * time.Hour),
				RefreshToken: "83_r", RefreshExpiresAt: now.Add(-30 * 24 * time.Hour), Failures: 3, RetryAt: now.Add(time.Minute)}
		}
		b, err := json.Marshal(&s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	family, err := json.Marshal(&Family{ID: "fam1", Identity: Identity{OpenID: "o1", AppID: "wx1", Scope: "app"}, Current: "h", Revoked: true,
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Rotated: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"empty":              {},
		"one byte":           {'x'},
		"session UTC":        record(time.Date(2026, 11, 23, 16, 6, 33, 855281320, time.UTC), true),
		"session +08:00":     record(time.Date(2026, 11, 23, 16, 6, 33, 855281320, shanghai), true),
		"session -03:30":     record(time.Date(2026, 11, 23, 16, 6, 33, 1, time.FixedZone("", -(3*3600+1800))), false),
		"session whole secs": record(time.Date(2026, 11, 23, 16, 6, 33, 0, time.UTC), false),
		"session 1850":       record(time.Date(1850, 1, 1, 0, 0, 0, 0, time.UTC), true),
		"family":             family,
		// Times that parse but do not write back the same, so stay text.
		"trailing zeros":  []byte(`"2026-11-23T16:06:33.500Z"`),
		"minus zero":      []byte(`"2026-11-23T16:06:33-00:00"`),
		"plus zero":       []byte(`"2026-11-23T16:06:33+00:00"`),
		"31 February":     []byte(`"2026-02-31T16:06:33Z"`),
		"ten digits":      []byte(`"2026-11-23T16:06:33.1234567891Z"`),
		"hour 24":         []byte(`"2026-11-23T24:00:00Z"`),
		"cut short":       []byte(`2026-11-23T16:06:33`),
		"offset cut":      []byte(`2026-11-23T16:06:33+08:0`),
		"op bytes":        {0x00, 0x01, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x7f, 0x80, 0xff},
		"invalid UTF-8":   []byte("\xff\xfe" + `{"identity":{"openid":"` + "\xc3"),
		"base64 runs":     []byte(strings.Repeat("A", 11) + "|" + strings.Repeat("_-", 6) + "|" + strings.Repeat("x", 13) + "|" + strings.Repeat("Zz9", 1000)),
		"phrase prefixes": []byte(`","scope":"snsapi","scope":"snsapi_","avatar":"https://thirdwx.qlogo.cn/mmopen`),
		"binary":          bytes.Repeat([]byte{0, 1, 2, 250}, 64),
	}
}

// TestPackRoundTrip: every value unpacks to exactly the bytes packed.
func TestPackRoundTrip(t *testing.T) {
	for name, v := range packCases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := string(appendPacked(nil, v))
			if len(p) > len(v)+1 {
				t.Errorf("packed %d bytes into %d: more than a byte of overhead", len(v), len(p))
			}
			if n := unpackedLen(p); n != len(v) {
				t.Errorf("unpackedLen = %d, want %d", n, len(v))
			}
			got, err := unpack([]byte("prefix:"), p)
			if err != nil || string(got) != "prefix:"+string(v) {
				t.Errorf("unpack(appendPacked(%q)) = %q, %v", v, got, err)
			}
			if !holds(p, v) {
				t.Errorf("holds(packed, value) = false")
			}
			if len(v) > 0 && holds(p, v[:len(v)-1]) {
				t.Errorf("holds(packed, value cut short) = true")
			}
		})
	}
}

// TestPackSize: a session record packs to about half, in any zone. The
// figures are BenchmarkBytesPerSession's margin under 1 KiB (issue 10).
func TestPackSize(t *testing.T) {
	cases := packCases(t)
	for _, name := range []string{"session UTC", "session +08:00"} {
		v := cases[name]
		if p := appendPacked(nil, v); len(p) > len(v)*6/10 {
			t.Errorf("%s: %d bytes packed into %d, want at most 60%%", name, len(v), len(p))
		}
	}
}

// TestUnpackMalformed: a value that appendPacked did not write fails to
// unpack, and never panics or allocates beyond its bound.
func TestUnpackMalformed(t *testing.T) {
	for name, p := range map[string]string{
		"unknown tag":         "\x07abc",
		"length too long":     "\x01\x05ab",
		"length too short":    "\x01\x01abc",
		"huge length":         "\x01\xff\xff\xff\xff\xff\xff\xff\xff\x7f" + "a",
		"literal at end":      "\x01\x01\x00",
		"run cut short":       "\x01\x08\x1d\x02abc",
		"run length cut":      "\x01\x08\x1d\x80",
		"time cut":            "\x01\x14\x1e\x80",
		"offset out of range": "\x01\x19\x1f\xb0\x6d\x00", // +116:40, written back as +16:40
		"unknown op":          "\x01\x01\x1a",
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := unpack(nil, p); err == nil {
				t.Errorf("unpack(%q) = %q, nil; want an error", p, got)
			}
		})
	}
}

// FuzzPack: what packs unpacks to itself, and no input makes unpack
// panic.
func FuzzPack(f *testing.F) {
	for _, v := range packCases(f) {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		p := string(appendPacked(nil, v))
		if got, err := unpack(nil, p); err != nil || !bytes.Equal(got, v) {
			t.Fatalf("unpack(appendPacked(%q)) = %q, %v", v, got, err)
		}
		_, _ = unpack(nil, string(v))
		_ = unpackedLen(string(v))
	})
}

// TestMemoryKeepsBytes: the memory store gives back what it was given,
// byte for byte, Swap compares those bytes, and a snapshot holds them
// as they were given, as the store before packing wrote and read it.
func TestMemoryKeepsBytes(t *testing.T) {
	ctx := context.Background()
	cases := packCases(t)
	m := NewMemory(0)
	for name, v := range cases {
		if err := m.Set(ctx, "sess:"+name, v, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range cases {
		got, err := m.Get(ctx, "sess:"+name)
		if err != nil || !bytes.Equal(got, v) {
			t.Errorf("%s: Get = %q, %v; want %q", name, got, err, v)
		}
	}
	v := cases["session UTC"]
	touched := bytes.Replace(v, []byte(`"last_seen":"2026`), []byte(`"last_seen":"2027`), 1)
	if ok, err := m.Swap(ctx, "sess:session UTC", touched, v, time.Hour); ok || err != nil {
		t.Errorf("Swap from bytes never stored = %v, %v; want false", ok, err)
	}
	if ok, err := m.Swap(ctx, "sess:session UTC", v, touched, time.Hour); !ok || err != nil {
		t.Errorf("Swap from the bytes stored = %v, %v; want true", ok, err)
	}

	path := filepath.Join(t.TempDir(), "snapshot")
	if _, err := m.SaveSnapshot(path, OriginServe); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file snapshotFile
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	if got := file.Entries["sess:session UTC"].Value; !bytes.Equal(got, touched) {
		t.Errorf("snapshot value = %q, want the JSON as stored: %q", got, touched)
	}
}

// TestSnapshotFromUnpackedStore: a wxgate-snapshot/2 file as the memory
// store wrote it before it packed values (its records as the Manager's
// JSON) loads, and gives those bytes back.
func TestSnapshotFromUnpackedStore(t *testing.T) {
	ctx := context.Background()
	record := packCases(t)["session +08:00"]
	future := time.Now().Add(time.Hour)
	file := `{"format":"wxgate-snapshot/2","origin":"serve","written":"2026-11-23T16:00:00Z","entries":{` +
		`"sess:k1":{"v":"` + base64.StdEncoding.EncodeToString(record) + `","e":"` + future.Format(time.RFC3339Nano) + `"},` +
		`"idx:user:o1":{"e":"` + future.Format(time.RFC3339Nano) + `","s":{"s:k1":` + strconv.FormatInt(future.UnixNano(), 10) + `}}}}`
	path := filepath.Join(t.TempDir(), "snapshot")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewMemory(0)
	if n, err := m.LoadSnapshot(path, OriginServe); n != 2 || err != nil {
		t.Fatalf("LoadSnapshot = %d, %v; want 2, nil", n, err)
	}
	if got, err := m.Get(ctx, "sess:k1"); err != nil || !bytes.Equal(got, record) {
		t.Errorf("Get after load = %q, %v; want %q", got, err, record)
	}
	if got, _ := m.Members(ctx, "idx:user:o1"); len(got) != 1 || got[0] != "s:k1" {
		t.Errorf("Members after load = %v, want [s:k1]", got)
	}
}

// TestAppendTime: appendTime writes what time.Time's MarshalJSON does, at
// random instants from 1900 to 2200, in UTC and at offsets either side,
// and at the ends of days, months and leap years; timeAt reads it back.
func TestAppendTime(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	lo, hi := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), time.Date(2200, 12, 31, 0, 0, 0, 0, time.UTC).UnixNano()
	instants := []int64{0, -1, 1, lo, hi,
		time.Date(2000, 2, 29, 23, 59, 59, 999999999, time.UTC).UnixNano(),
		time.Date(2100, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano(),
		time.Date(1969, 12, 31, 23, 59, 59, 500, time.UTC).UnixNano(),
	}
	for range 20000 {
		instants = append(instants, lo+int64(r.Uint64N(uint64(hi)-uint64(lo))))
	}
	for _, n := range instants {
		for _, offset := range []int{0, 8 * 60, -(3*60 + 30), 14 * 60, -12 * 60} {
			tm := time.Unix(0, n).In(time.FixedZone("", offset*60))
			want := tm.Format(time.RFC3339Nano)
			got := string(appendTime(nil, n, offset, offset == 0))
			if got != want {
				t.Fatalf("appendTime(%d, %d) = %s, want %s", n, offset, got, want)
			}
			if tm.Year() < 1900 || tm.Year() > 2200 {
				continue // not packed
			}
			if l, tn, off, utc := timeAt([]byte(want + `"`)); l != len(want) || tn != n || off != offset || utc != (offset == 0) {
				t.Fatalf("timeAt(%s) = %d, %d, %d, %v; want %d, %d, %d, %v", want, l, tn, off, utc, len(want), n, offset, offset == 0)
			}
		}
	}
}

// TestPhrasesFitExpansion: unpacking trusts that no byte stands for more
// than maxExpansion bytes; a longer phrase would make long values fail to
// read back.
func TestPhrasesFitExpansion(t *testing.T) {
	for _, p := range phrases {
		if len(p) > maxExpansion {
			t.Errorf("phrase %q is %d bytes, above maxExpansion (%d)", p, len(p), maxExpansion)
		}
	}
}
