package proxy

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"time"
)

// watchEvery is how often [server] watch_config reads the config file;
// watchSettle, how long a changed content must stay the same before it is
// reloaded.
const (
	watchEvery  = time.Second
	watchSettle = 200 * time.Millisecond
)

// watchConfig reloads the config whenever its file's content changes,
// until ctx ends. It reads the file through its path every time and
// compares hashes, rather than following file events: an editor that
// writes a new file and renames it over the old one, and a Kubernetes
// ConfigMap that swaps the ..data symlink under the file's path, change
// what the path reads, which is all that counts, and a file cannot change
// unseen behind an event missed or a watch left on a replaced inode. A
// content is reloaded once it reads the same twice watchSettle apart (a
// file being written is not taken half-way), and only once: a refused
// file is not tried again until it changes. A content a reload on SIGHUP
// has read already is not reloaded again.
func (s *Server) watchConfig(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	unreadable := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sum, err := fileSum(s.cfg.path)
		if err != nil {
			if !unreadable {
				// Once per spell: a swap that leaves the path missing for a
				// moment is not worth a line a second.
				s.log.LogAttrs(ctx, slog.LevelWarn, "watch_config: cannot read the config file; the running config stays",
					slog.String("file", s.cfg.path), slog.Any("error", err))
			}
			unreadable = true
			continue
		}
		unreadable = false
		if sum == *s.readSum.Load() {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(watchSettle):
		}
		if again, err := fileSum(s.cfg.path); err != nil || again != sum {
			continue // still being written: the next tick looks again
		}
		_ = s.Reload() // it logs, counts and records what it read
	}
}

func fileSum(path string) ([32]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}
