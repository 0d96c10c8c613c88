package embedded

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The write-ahead log. An Append is durable once its records are in the WAL
// and the WAL is fsynced: one sequential write and one fdatasync per group
// commit, where a bbolt commit costs two fsyncs and a B+tree update. The
// records then sit in the memtable (mem.go) until the flusher copies them
// into bbolt, which is the log's home; a WAL segment is deleted once every
// record in it is in bbolt. On Open, records that a crash left only in the
// WAL are copied into bbolt before anything else happens.
//
// A segment is named wal-<first seq, 16 hex digits>.log and holds frames:
//
//	u32 length of the payload, u32 CRC-32C of the payload, payload
//	payload: seq (u64, big-endian), then the record (record.go)
//
// A segment's frames start at the seq in its name and their seqs increase.
// They need not be dense: the events of a CommitState go straight into bbolt
// (commitBolt), so the WAL skips their seqs, and bbolt has them before any
// later frame is written. A frame that is short, fails its checksum or
// carries a seq below the one expected ends the segment: it is the tail of a
// write whose fsync never returned (nobody was told it was durable), or what
// a pre-written segment held before (zeros, or frames of a recycled segment,
// whose seqs are all older).
//
// Pre-written segments. An fdatasync after appending to a file must also
// commit the file's new size and blocks to the file system's journal; after
// overwriting blocks that are already written it flushes data only, which
// measured 2.5-3 times faster here. So once a store is busy (walPrepareAfter),
// a spare segment is filled with zeros in the background, or a segment that
// was released is kept as the spare, and the next rotation renames the spare
// into place and overwrites it from the start.
const (
	walPrefix    = "wal-"
	walSuffix    = ".log"
	walSpareName = "wal-spare.tmp"
	walFrameHead = 8
)

// Variables, not constants, so that tests can make segments small.
var (
	// walSegmentSize is where the active segment is rotated, and the size
	// of a pre-written spare segment.
	walSegmentSize int64 = 64 << 20
	// walPrepareAfter: once a store has written this much to a segment
	// that is not pre-written, a spare is prepared in the background. A
	// store that never sees that much traffic never pays for one.
	walPrepareAfter int64 = 4 << 20
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// errWALFailed marks a store whose WAL could not be written or synced: what
// reached the file is unknown, so nothing more is appended until it is
// reopened (and recovery reads what is really there).
var errWALFailed = errors.New("embedded: the write-ahead log failed; reopen the store")

type walSegment struct {
	path string
	last uint64 // last seq in the segment
}

// wal is owned by the committer (write, sync, rotate); release is called by
// whoever flushed, under mu.
type wal struct {
	dir    string
	noSync bool

	f          *os.File
	path       string
	off        int64 // where the next frame goes
	prewritten bool  // the active segment was a spare: overwrite, do not append
	buf        []byte

	mu         sync.Mutex
	closed     []walSegment // rotated segments, oldest first
	spare      string       // a pre-written file ready for the next rotation
	preparing  bool         // a goroutine is preparing the spare
	prep       sync.WaitGroup
	zeroFailed bool // writing a spare failed: no new try until the next rotation
	recycled   int  // segments kept as spares (tests)
}

func newWAL(dir string, noSync bool) *wal {
	w := &wal{dir: dir, noSync: noSync}
	spare := filepath.Join(dir, walSpareName)
	if fi, err := os.Stat(spare); err == nil {
		if fi.Size() >= walSegmentSize {
			w.spare = spare
		} else {
			_ = os.Remove(spare) // a preparation that a crash cut short
		}
	}
	return w
}

func walName(first uint64) string {
	return fmt.Sprintf("%s%016x%s", walPrefix, first, walSuffix)
}

// walSegments lists dir's segments in log order.
func walSegments(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, walPrefix) || !strings.HasSuffix(n, walSuffix) {
			continue
		}
		if _, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, walPrefix), walSuffix), 16, 64); err != nil {
			continue
		}
		out = append(out, filepath.Join(dir, n))
	}
	slices.Sort(out) // fixed-width hex: name order is seq order
	return out, nil
}

// replayWAL calls fn for every intact frame of the segments in dir whose seq
// is above after, in log order, stopping where the log ends.
func replayWAL(dir string, after uint64, fn func(seq uint64, rec []byte) error) error {
	paths, err := walSegments(dir)
	if err != nil {
		return fmt.Errorf("embedded: list the write-ahead log: %w", err)
	}
	next := uint64(0) // no segment may start below it
	for _, p := range paths {
		first, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), walPrefix), walSuffix), 16, 64)
		if first < next {
			return nil // not a successor of the previous segment: the log ends there
		}
		end, err := replaySegment(p, first, after, fn)
		if err != nil {
			return err
		}
		next = end
	}
	return nil
}

// replaySegment reads the frames of one segment, which start at seq first,
// and returns the seq after its last intact frame (first if it has none).
func replaySegment(path string, first, after uint64, fn func(uint64, []byte) error) (next uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var head [walFrameHead]byte
	next = first
	for {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return next, nil // the end, or a torn frame header
		}
		n := binary.BigEndian.Uint32(head[:4])
		if n < 8 || n > maxWALPayload {
			return next, nil // zeros, or not a frame
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return next, nil
		}
		if crc32.Checksum(payload, walCRC) != binary.BigEndian.Uint32(head[4:]) {
			return next, nil
		}
		seq := binary.BigEndian.Uint64(payload)
		if seq < next {
			return next, nil // a recycled segment's old frame
		}
		next = seq + 1
		if seq <= after {
			continue
		}
		if err := fn(seq, payload[8:]); err != nil {
			return next, err
		}
	}
}

// maxWALPayload bounds a frame read back, so a corrupt length cannot make
// recovery allocate gigabytes. A record is bounded far below it by the
// store's validation.
const maxWALPayload = 256 << 20

// append writes the frames of ents to the active segment (creating or
// rotating it first) and, unless noSync, fdatasyncs it.
func (w *wal) append(ents []memEntry) error {
	b := w.buf[:0]
	for i := range ents {
		e := &ents[i]
		start := len(b)
		b = append(b, make([]byte, walFrameHead)...)
		b = binary.BigEndian.AppendUint64(b, e.seq)
		b = append(b, e.rec...)
		payload := b[start+walFrameHead:]
		binary.BigEndian.PutUint32(b[start:], uint32(len(payload)))
		binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(payload, walCRC))
	}
	if cap(b) <= 4<<20 {
		w.buf = b
	}
	full := w.off > 0 && w.off+int64(len(b)) > walSegmentSize
	if w.f == nil || full || (!w.prewritten && w.spareReady()) {
		if err := w.rotate(ents[0].seq); err != nil {
			return err
		}
	}
	// A batch larger than a segment is written past its end (appending).
	if _, err := w.f.WriteAt(b, w.off); err != nil {
		return fmt.Errorf("embedded: write %s: %w", w.path, err)
	}
	w.off += int64(len(b))
	if !w.noSync {
		if err := fdatasync(w.f); err != nil {
			return fmt.Errorf("embedded: sync %s: %w", w.path, err)
		}
	}
	// A spare should be ready by the next rotation: usually a released
	// segment comes back first (release), else write one.
	if !w.prewritten && w.off >= walPrepareAfter || w.prewritten && w.off >= walSegmentSize/2 {
		w.prepare("")
	}
	return nil
}

func (w *wal) spareReady() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.spare != ""
}

// rotate closes the active segment (already synced by its last append) and
// starts the one whose first seq is first: the spare if one is ready, else a
// new empty file. The directory is synced so that the name survives a crash.
func (w *wal) rotate(first uint64) error {
	if w.f != nil {
		if err := w.f.Close(); err != nil {
			return fmt.Errorf("embedded: close %s: %w", w.path, err)
		}
		w.mu.Lock()
		w.closed = append(w.closed, walSegment{path: w.path, last: first - 1})
		w.mu.Unlock()
		w.f = nil
	}
	path := filepath.Join(w.dir, walName(first))
	w.mu.Lock()
	spare := w.spare
	w.spare, w.zeroFailed = "", false
	w.mu.Unlock()
	prewritten := false
	if spare != "" {
		if err := os.Rename(spare, path); err == nil {
			prewritten = true
		}
	}
	flags := os.O_CREATE | os.O_WRONLY
	if !prewritten {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return fmt.Errorf("embedded: create %s: %w", path, err)
	}
	if !w.noSync {
		if err := syncDir(w.dir); err != nil {
			_ = f.Close()
			return err
		}
	}
	w.f, w.path, w.off, w.prewritten = f, path, 0, prewritten
	return nil
}

// prepare makes a spare in the background unless one is ready or coming:
// from recycle (a released segment) when given, else by writing zeros.
// It reports whether it took recycle.
func (w *wal) prepare(recycle string) bool {
	w.mu.Lock()
	if w.spare != "" || w.preparing || recycle == "" && w.zeroFailed {
		w.mu.Unlock()
		return false
	}
	w.preparing = true
	w.mu.Unlock()
	path := filepath.Join(w.dir, walSpareName)
	if recycle != "" {
		err := os.Rename(recycle, path)
		w.mu.Lock()
		w.preparing = false
		if err == nil {
			w.spare = path
			w.recycled++
		}
		w.mu.Unlock()
		return err == nil
	}
	w.prep.Add(1)
	go func() {
		defer w.prep.Done()
		err := writeZeros(path, walSegmentSize, w.noSync)
		w.mu.Lock()
		// On failure (a full disk?) the WAL goes on appending to segments
		// that are not pre-written, which is slower, not wrong.
		w.preparing, w.zeroFailed = false, err != nil
		if err == nil {
			w.spare = path
		}
		w.mu.Unlock()
	}()
	return false
}

func writeZeros(path string, size int64, noSync bool) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < size && err == nil; off += int64(len(zeros)) {
		_, err = f.Write(zeros)
	}
	if err == nil && !noSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

// release deletes the rotated segments whose records are all in bbolt
// (seq <= applied), keeping a full-size one as the next spare.
func (w *wal) release(applied uint64) {
	w.mu.Lock()
	n := 0
	for n < len(w.closed) && w.closed[n].last <= applied {
		n++
	}
	done := slices.Clone(w.closed[:n])
	w.closed = slices.Delete(w.closed, 0, n)
	w.mu.Unlock()
	for _, s := range done {
		_ = w.retire(s.path) // a leftover is replayed and skipped on Open
	}
}

// retire disposes of a segment whose records are all in bbolt: kept as the
// spare when it is full size and none is ready, else deleted. Its old frames
// hold seqs below every later one, which replay tells apart.
func (w *wal) retire(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() >= walSegmentSize && w.prepare(path) {
		return nil
	}
	return os.Remove(path)
}

// close waits for a spare being prepared, closes the active segment and,
// when everything is in bbolt (complete), deletes every segment. A spare is
// kept for the next Open.
func (w *wal) close(complete bool) error {
	w.prep.Wait()
	var err error
	if w.f != nil {
		err = w.f.Close()
		w.f = nil
	}
	if complete {
		w.mu.Lock()
		for _, s := range w.closed {
			_ = os.Remove(s.path)
		}
		w.closed = nil
		w.mu.Unlock()
		if w.path != "" {
			_ = os.Remove(w.path)
		}
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("embedded: sync %s: %w", dir, err)
	}
	return nil
}
