package session

import (
	"container/heap"
	"iter"
	"slices"
	"sort"
)

// smallSet is the most members a memberSet keeps in a plain slice. A
// person's index holds a login or two, and a map per index cost about 500
// bytes of every idle session (issue 10); beyond this many, finding a
// member by a scan would cost more than the map and the heap save.
const smallSet = 16

// memberSet is the memory store's set: each member with the time it may be
// dropped (unix nanoseconds). Up to smallSet members are a slice in time
// order; beyond, they move to a largeSet, by name and in a min-heap by
// time, so that dropping the expired members and finding the ones nearest
// their end cost O(log n) each, whatever the set's size (issue 9: a
// whole-set rewrite per add made 6,000 logins of one person five times
// slower). Callers hold the lock of the store that holds the set.
type memberSet struct {
	// small holds the members, earliest time first, while large is nil.
	small []member
	large *largeSet
	// last is the latest expiry ever added: the set is kept until then,
	// which is never before any member's.
	last int64
	// exp is when the store drops the set, in unix nanoseconds by the
	// store's clock: last by the clock of the caller of AddMember.
	exp int64
}

type member struct {
	name  string
	until int64
}

// largeSet is a memberSet's members once there are more than smallSet.
type largeSet struct {
	byName map[string]*heapMember
	heap   memberHeap
}

type heapMember struct {
	member
	i int // index in the heap
}

// add lists name until until, or keeps it listed until then if that is
// later than it was: a member's time only ever grows, so a late add from
// an older rotation cannot cut a newer one's short. A new name is kept as
// own returns it: a copy, never the caller's string, which may alias a
// buffer.
func (s *memberSet) add(name string, until int64, own func(string) string) {
	s.last = max(s.last, until)
	if s.large != nil {
		s.large.add(name, until, own)
		return
	}
	if i := s.index(name); i >= 0 {
		if until <= s.small[i].until {
			return
		}
		name = s.small[i].name
		s.small = slices.Delete(s.small, i, i+1)
	} else {
		name = own(name)
	}
	if len(s.small) == smallSet {
		s.large = &largeSet{byName: make(map[string]*heapMember, smallSet+1)}
		for _, e := range s.small {
			s.large.add(e.name, e.until, owned)
		}
		s.large.add(name, until, owned)
		s.small = nil
		return
	}
	// After the members with the same time: the order the heap would
	// give is no better.
	i := sort.Search(len(s.small), func(i int) bool { return s.small[i].until > until })
	s.small = slices.Insert(s.small, i, member{name: name, until: until})
}

// owned is own for a name that is already the set's.
func owned(name string) string { return name }

// index returns name's place in s.small, or -1.
func (s *memberSet) index(name string) int {
	return slices.IndexFunc(s.small, func(e member) bool { return e.name == name })
}

// prune drops the members whose time is not after now.
func (s *memberSet) prune(now int64) {
	if s.large != nil {
		s.large.prune(now)
		return
	}
	n := 0
	for n < len(s.small) && s.small[n].until <= now {
		n++
	}
	s.small = slices.Delete(s.small, 0, n)
}

// remove drops name, if listed.
func (s *memberSet) remove(name string) {
	if s.large != nil {
		s.large.remove(name)
		return
	}
	if i := s.index(name); i >= 0 {
		s.small = slices.Delete(s.small, i, i+1)
	}
}

// over returns the members beyond the first limit, nearest their end
// first, never keep; it leaves them in the set. limit 0 means no bound.
func (s *memberSet) over(limit int, keep string) []string {
	n := s.len() - limit
	if limit <= 0 || n <= 0 {
		return nil
	}
	if s.large != nil {
		return s.large.over(n, keep)
	}
	out := make([]string, 0, n)
	for _, e := range s.small {
		if len(out) == n {
			break
		}
		if e.name != keep {
			out = append(out, e.name)
		}
	}
	return out
}

// len returns how many members s holds.
func (s *memberSet) len() int {
	if s.large != nil {
		return len(s.large.heap)
	}
	return len(s.small)
}

// all yields each member with its time, in no order.
func (s *memberSet) all() iter.Seq2[string, int64] {
	return func(yield func(string, int64) bool) {
		if s.large != nil {
			for _, e := range s.large.heap {
				if !yield(e.name, e.until) {
					return
				}
			}
			return
		}
		for _, e := range s.small {
			if !yield(e.name, e.until) {
				return
			}
		}
	}
}

// names returns the members, in no order.
func (s *memberSet) names() []string {
	out := make([]string, 0, s.len())
	for name := range s.all() {
		out = append(out, name)
	}
	return out
}

// add is memberSet.add for a large set.
func (s *largeSet) add(name string, until int64, own func(string) string) {
	if e, ok := s.byName[name]; ok {
		if until > e.until {
			e.until = until
			heap.Fix(&s.heap, e.i)
		}
		return
	}
	e := &heapMember{member: member{name: own(name), until: until}}
	s.byName[e.name] = e
	heap.Push(&s.heap, e)
}

func (s *largeSet) prune(now int64) {
	for len(s.heap) > 0 && s.heap[0].until <= now {
		e := heap.Pop(&s.heap).(*heapMember)
		delete(s.byName, e.name)
	}
}

func (s *largeSet) remove(name string) {
	if e, ok := s.byName[name]; ok {
		heap.Remove(&s.heap, e.i)
		delete(s.byName, name)
	}
}

// over returns n members other than keep, nearest their end first.
func (s *largeSet) over(n int, keep string) []string {
	var taken []*heapMember
	out := make([]string, 0, n)
	for len(out) < n && len(s.heap) > 0 {
		e := heap.Pop(&s.heap).(*heapMember)
		taken = append(taken, e)
		if e.name != keep {
			out = append(out, e.name)
		}
	}
	for _, e := range taken {
		heap.Push(&s.heap, e)
	}
	return out
}

// memberHeap orders members by time, earliest first (container/heap).
type memberHeap []*heapMember

func (h memberHeap) Len() int           { return len(h) }
func (h memberHeap) Less(i, j int) bool { return h[i].until < h[j].until }
func (h memberHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].i, h[j].i = i, j
}
func (h *memberHeap) Push(x any) {
	e := x.(*heapMember)
	e.i = len(*h)
	*h = append(*h, e)
}
func (h *memberHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
