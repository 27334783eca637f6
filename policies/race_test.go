//go:build race

package policies

// raceEnabled reports whether the race detector is on. It makes sync.Pool
// drop items at random, so regexp allocates matchers and allocation counts
// mean nothing.
const raceEnabled = true
