package session

import (
	"container/heap"
	"strings"
)

// memberSet is the memory store's set: each member with the time it may be
// dropped (unix nanoseconds), in a min-heap by that time, so that dropping
// the expired members and finding the ones nearest their end cost
// O(log n) each, whatever the set's size (issue 9: a whole-set rewrite per
// add made 6,000 logins of one person five times slower). Callers hold
// Memory.sets.
type memberSet struct {
	byName map[string]*member
	heap   memberHeap
	// last is the latest expiry ever added: the set is kept until then,
	// which is never before any member's.
	last int64
}

type member struct {
	name  string
	until int64
	i     int // index in the heap
}

func newMemberSet() *memberSet { return &memberSet{byName: map[string]*member{}} }

// add lists name until until, or keeps it listed until then if that is
// later than it was: a member's time only ever grows, so a late add from
// an older rotation cannot cut a newer one's short.
func (s *memberSet) add(name string, until int64) {
	if e, ok := s.byName[name]; ok {
		if until > e.until {
			e.until = until
			heap.Fix(&s.heap, e.i)
		}
	} else {
		e := &member{name: strings.Clone(name), until: until}
		s.byName[e.name] = e
		heap.Push(&s.heap, e)
	}
	s.last = max(s.last, until)
}

// prune drops the members whose time is not after now.
func (s *memberSet) prune(now int64) {
	for len(s.heap) > 0 && s.heap[0].until <= now {
		e := heap.Pop(&s.heap).(*member)
		delete(s.byName, e.name)
	}
}

// remove drops name, if listed.
func (s *memberSet) remove(name string) {
	if e, ok := s.byName[name]; ok {
		heap.Remove(&s.heap, e.i)
		delete(s.byName, name)
	}
}

// over returns the members beyond the first limit, nearest their end
// first, never keep; it leaves them in the set. limit 0 means no bound.
func (s *memberSet) over(limit int, keep string) []string {
	n := len(s.heap) - limit
	if limit <= 0 || n <= 0 {
		return nil
	}
	var taken []*member
	out := make([]string, 0, n)
	for len(out) < n && len(s.heap) > 0 {
		e := heap.Pop(&s.heap).(*member)
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

// names returns the members, in no order.
func (s *memberSet) names() []string {
	out := make([]string, 0, len(s.byName))
	for name := range s.byName {
		out = append(out, name)
	}
	return out
}

// memberHeap orders members by time, earliest first (container/heap).
type memberHeap []*member

func (h memberHeap) Len() int           { return len(h) }
func (h memberHeap) Less(i, j int) bool { return h[i].until < h[j].until }
func (h memberHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].i, h[j].i = i, j
}
func (h *memberHeap) Push(x any) {
	e := x.(*member)
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
