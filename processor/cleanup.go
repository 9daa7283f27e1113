package processor

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/reservations/reservations/statestore"
)

// releasedFile marks a partition's store folder that this instance no longer
// owns; its modification time is when it was released.
const releasedFile = "RELEASED"

// markReleased marks dir as released now (best effort: a missing mark only
// delays the cleanup, see cleanupStores).
func markReleased(dir string) {
	_ = os.WriteFile(filepath.Join(dir, releasedFile), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
}

func removeReleased(dir string) { _ = os.Remove(filepath.Join(dir, releasedFile)) }

// wipeFile marks a store folder found unreadable while deciding: the next
// restore wipes it and rebuilds the partition in full.
const wipeFile = "WIPE"

func markWipe(dir string) {
	_ = os.WriteFile(filepath.Join(dir, wipeFile), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
}

func wipeMarked(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, wipeFile))
	return err == nil
}

// cleanupStores deletes the store folders of partitions this instance has not
// owned for StateCleanupDelay (like Kafka Streams' state.cleanup.delay.ms): a
// partition that comes back soon (a rebalance back and forth) keeps its store
// and replays a tail; one that stays away does not fill the disk. A folder
// without a mark (the process was killed) is marked now. Runs on the main loop,
// which alone creates partitions, so a folder is never removed under one.
func (p *Processor) cleanupStores(now time.Time) {
	p.mu.Lock()
	joined := p.joined
	p.mu.Unlock()
	if !joined || now.Sub(p.lastCleanup) < time.Minute {
		return // not before the group assigned us what we own
	}
	p.lastCleanup = now
	prefix := p.io.Changelog + "-"
	entries, err := os.ReadDir(p.cfg.StateDir)
	if err != nil {
		p.log.Warn("state cleanup: list state folder", "dir", p.cfg.StateDir, "err", err)
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimPrefix(e.Name(), prefix), 10, 32)
		if err != nil {
			continue
		}
		if _, owned := p.parts[int32(n)]; owned {
			continue
		}
		if _, standby := p.standbys[int32(n)]; standby {
			continue
		}
		dir := filepath.Join(p.cfg.StateDir, e.Name())
		fi, err := os.Stat(filepath.Join(dir, releasedFile))
		if err != nil {
			markReleased(dir)
			continue
		}
		if away := now.Sub(fi.ModTime()); away >= p.cfg.StateCleanupDelay {
			// Not a folder another process has open (replay while we run).
			s, err := statestore.Open(dir, statestore.Options{})
			if errors.Is(err, statestore.ErrLocked) {
				continue
			}
			if err == nil {
				_ = s.Close()
			}
			if err := statestore.Remove(dir); err != nil {
				p.log.Warn("state cleanup", "dir", dir, "err", err)
				continue
			}
			p.mu.Lock()
			delete(p.released, int32(n))
			p.mu.Unlock()
			p.log.Info("removed the store of a partition not owned for the cleanup delay", "dir", dir,
				"away", away.Round(time.Second), "delay", p.cfg.StateCleanupDelay)
		}
	}
}
