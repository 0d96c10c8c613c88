package embedded

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// memEntry is one event that is durable in the WAL and may not be in bbolt
// yet. rec is the final record (recorded_at and version set); it is never
// changed once the entry is in the memtable.
type memEntry struct {
	seq     uint64
	rec     []byte
	id      uuid.UUID
	stream  string
	version int64
}

type memStream struct {
	version int64
	seq     uint64
}

// memtable holds the events between bbolt's last seq and the head, in seq
// order (dense), with the indexes Append's checks need. The committer adds
// to its end, flushes remove from its start; readers take a snapshot (the
// slice as it is) under mu and read it without the lock: entries are never
// changed or overwritten in place, a flush only moves the start forward.
//
// Whatever a snapshot lacks at its start is in bbolt by the time the
// snapshot is taken (entries leave only after the bbolt commit holding them),
// so a reader takes the snapshot first and opens its bbolt transaction after.
type memtable struct {
	mu      sync.Mutex
	entries []memEntry
	ids     map[uuid.UUID]uint64 // id → seq
	streams map[string]memStream // stream → its last event in the memtable
	bytes   int
	oldest  time.Time // when the entries began to wait: the first add, or the last trim that left some
	trimmed uint64    // the last seq dropped (it and all before are in bbolt)
}

func newMemtable() *memtable {
	return &memtable{ids: map[uuid.UUID]uint64{}, streams: map[string]memStream{}}
}

// add appends ents (which follow the last entry) once they are durable.
func (m *memtable) add(ents []memEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.entries) == 0 {
		m.oldest = time.Now()
	}
	for i := range ents {
		e := &ents[i]
		m.entries = append(m.entries, *e)
		m.ids[e.id] = e.seq
		m.streams[e.stream] = memStream{version: e.version, seq: e.seq}
		m.bytes += len(e.rec)
	}
}

// snapshot returns the entries as they are now, at most max of them from
// the start (all when max <= 0).
func (m *memtable) snapshot(max int) []memEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	ents := m.entries
	if max > 0 && len(ents) > max {
		ents = ents[:max]
	}
	return ents[:len(ents):len(ents)]
}

// stats is what the flusher decides on.
func (m *memtable) stats() (n, bytes int, oldest time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries), m.bytes, m.oldest
}

// trim drops the entries up to seq, which are in bbolt now.
func (m *memtable) trim(seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for n < len(m.entries) && m.entries[n].seq <= seq {
		e := &m.entries[n]
		delete(m.ids, e.id)
		if s, ok := m.streams[e.stream]; ok && s.seq <= seq {
			delete(m.streams, e.stream)
		}
		m.bytes -= len(e.rec)
		n++
	}
	m.trimmed = max(m.trimmed, seq)
	// Not cleared: snapshots may still read them. The array (and the
	// records it holds) goes once no snapshot has it: move the rest to a
	// new one when the dropped part is most of it.
	m.entries = m.entries[n:]
	switch {
	case len(m.entries) == 0:
		m.entries = nil
	case cap(m.entries) > 4*len(m.entries)+4096:
		// With room to grow, so that the next adds do not copy it again.
		m.entries = append(make([]memEntry, 0, 2*len(m.entries)+1024), m.entries...)
		fallthrough
	default:
		m.oldest = time.Now()
	}
}

// entryAt returns the entry for seq from a snapshot (which must hold it).
func entryAt(ents []memEntry, seq uint64) *memEntry {
	return &ents[seq-ents[0].seq]
}
