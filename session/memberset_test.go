package session

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

// TestMemberSetModel runs random adds, removes and prunes on a memberSet
// and on a plain map, across the move from a slice to a map and heap
// (smallSet), and compares what each reports after every step.
func TestMemberSetModel(t *testing.T) {
	for _, size := range []int{2, smallSet, smallSet + 1, 4 * smallSet} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(uint64(size), 1))
			s := &memberSet{}
			model := map[string]int64{}
			// Times are distinct, so that "nearest their end" has one answer.
			used := map[int64]bool{}
			var now int64
			const span = 1000
			later := func() int64 {
				for {
					if t := now + 1 + r.Int64N(span); !used[t] {
						used[t] = true
						return t
					}
				}
			}
			for step := range 2000 {
				name := "s:" + strconv.Itoa(r.IntN(size))
				switch op := r.IntN(10); {
				case op < 6:
					until := later()
					s.add(name, until, strings.Clone)
					model[name] = max(model[name], until)
				case op < 8:
					s.remove(name)
					delete(model, name)
				default:
					now += r.Int64N(span / 4)
					s.prune(now)
					for n, until := range model {
						if until <= now {
							delete(model, n)
						}
					}
				}
				got := map[string]int64{}
				for n, until := range s.all() {
					got[n] = until
				}
				if diff := gocmp.Diff(model, got); diff != "" {
					t.Fatalf("step %d: members (-want +got):\n%s", step, diff)
				}
				if s.len() != len(model) {
					t.Fatalf("step %d: len = %d, want %d", step, s.len(), len(model))
				}
				names := s.names()
				slices.Sort(names)
				if want := sortedKeys(model); !slices.Equal(names, want) {
					t.Fatalf("step %d: names = %v, want %v", step, names, want)
				}
				limit := 1 + r.IntN(size)
				if got, want := s.over(limit, name), modelOver(model, limit, name); !slices.Equal(got, want) {
					t.Fatalf("step %d: over(%d, %s) = %v, want %v", step, limit, name, got, want)
				}
			}
		})
	}
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// modelOver is memberSet.over on the model: len-limit members other than
// keep, nearest their end first.
func modelOver(m map[string]int64, limit int, keep string) []string {
	n := len(m) - limit
	if n <= 0 {
		return nil
	}
	keys := sortedKeys(m)
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(m[a], m[b]) })
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == keep })
	return keys[:min(n, len(keys))]
}

// TestMemberSetOwnsNames: a name added to a small set, then moved to a
// large one, is the set's own copy, not the caller's buffer.
func TestMemberSetOwnsNames(t *testing.T) {
	s := &memberSet{}
	buf := []byte("s:owned")
	s.add(aliased(buf), 1, strings.Clone)
	overwrite(buf)
	for i := range smallSet {
		s.add("s:"+strconv.Itoa(i), int64(2+i), strings.Clone)
	}
	if s.large == nil {
		t.Fatalf("%d members: still a small set", s.len())
	}
	if got := s.names(); !slices.Contains(got, "s:owned") {
		t.Errorf("names = %v, want s:owned listed as added", got)
	}
}
