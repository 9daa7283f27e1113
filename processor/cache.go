package processor

import "github.com/prometheus/client_golang/prometheus"

// This file is a partition's cache of committed entities, decoded: the read
// path's second stop after the open transaction's pending writes
// (partition.get). It is bounded by an estimate of the heap its entries hold,
// not by their number, so that Config.StateCacheBytes bounds the memory of
// every partition's cache of one processor together.
//
// Two generations: entries go into cur (leaving old); once cur holds more
// than half the partition's share, it becomes old (the previous old is
// dropped) and cur starts empty; an entry found in old moves back into cur.
// What was read or written since the last switch survives the next one (a hot
// SKU's stock stays cached, unless one transaction alone writes more than half
// a share), and the cache never holds more than its share (cur and old
// together), give or take one entry.

// cacheEntryOverhead is the heap an entry holds besides its key and the bytes
// of its encoded value: the maps' slots, the Change and entity structs (the
// decoded strings take about what the encoded value does).
// TestCacheSizeEstimate measures it.
const cacheEntryOverhead = 128

// minCacheGeneration is the least a generation holds, however small the share.
const minCacheGeneration = 64 << 10

type cacheEntry struct {
	c    Change
	size int64
}

type stateCache struct {
	cur, old           map[string]cacheEntry
	curBytes, oldBytes int64
	// limit is what cur may hold before it becomes old: half the share.
	limit int64
	// bytes is reservations_state_cache_bytes (every partition of the
	// processor adds its own); reported is what this cache added to it.
	bytes    prometheus.Gauge
	reported int64
}

func newStateCache(share int64, bytes prometheus.Gauge) stateCache {
	return stateCache{
		cur:   make(map[string]cacheEntry),
		limit: max(share/2, minCacheGeneration),
		bytes: bytes,
	}
}

// cacheShare is a partition's share of Config.StateCacheBytes.
func (env *partitionEnv) cacheShare() int64 {
	return env.cfg.StateCacheBytes / int64(max(1, env.layout.partitions))
}

// cacheSize is the heap an entry of key whose encoded value has n bytes is
// estimated to hold (n is 0 for a tombstone).
func cacheSize(key string, n int) int64 {
	return int64(len(key) + n + cacheEntryOverhead)
}

// get returns the cached entity of key (a tombstone caches its absence).
func (s *stateCache) get(key string) (Change, bool) {
	if e, ok := s.cur[key]; ok {
		return e.c, true
	}
	if e, ok := s.old[key]; ok {
		s.put(e.c, e.size)
		return e.c, true
	}
	return Change{}, false
}

// put caches c, which is estimated to hold size bytes (cacheSize).
func (s *stateCache) put(c Change, size int64) {
	if e, ok := s.cur[c.Key]; ok {
		s.curBytes -= e.size
	} else if e, ok := s.old[c.Key]; ok {
		s.oldBytes -= e.size
		delete(s.old, c.Key)
	}
	s.cur[c.Key] = cacheEntry{c: c, size: size}
	s.curBytes += size
	if s.curBytes > s.limit {
		s.old, s.oldBytes = s.cur, s.curBytes
		s.cur, s.curBytes = make(map[string]cacheEntry), 0
	}
}

// drop forgets key.
func (s *stateCache) drop(key string) {
	if e, ok := s.cur[key]; ok {
		s.curBytes -= e.size
		delete(s.cur, key)
	}
	if e, ok := s.old[key]; ok {
		s.oldBytes -= e.size
		delete(s.old, key)
	}
}

// held is the estimated heap of both generations.
func (s *stateCache) held() int64 { return s.curBytes + s.oldBytes }

// report brings reservations_state_cache_bytes up to date with this cache.
func (s *stateCache) report() {
	if s.bytes == nil {
		return
	}
	if d := s.held() - s.reported; d != 0 {
		s.bytes.Add(float64(d))
		s.reported += d
	}
}

// release takes this cache out of reservations_state_cache_bytes (its
// partition stopped).
func (s *stateCache) release() {
	if s.bytes != nil && s.reported != 0 {
		s.bytes.Add(float64(-s.reported))
	}
	s.reported = 0
	s.cur, s.old, s.curBytes, s.oldBytes = nil, nil, 0, 0
}
