package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// Record layout (format 1):
//
//	off  0  format byte (1)
//	off  1  recorded_at, unix nanoseconds, int64 big-endian
//	off  9  stream version, uint64 big-endian
//	off 17  event id (16 bytes)
//	off 33  uvarint len + type, uvarint len + stream, uvarint len + tenant,
//	        uvarint len + data, then metadata (the rest, possibly empty)
const (
	recordFormat  = 1
	offRecordedAt = 1
	offVersion    = 9
	offID         = 17
	offVar        = 33
)

var errCorrupt = errors.New("embedded: corrupt record")

// recordSize is the encoded size of e.
func recordSize(stream string, e *eventstore.ProposedEvent) int {
	return offVar + uvarintLen(len(e.Type)) + len(e.Type) + uvarintLen(len(stream)) + len(stream) +
		uvarintLen(len(e.Tenant)) + len(e.Tenant) + uvarintLen(len(e.Data)) + len(e.Data) + len(e.Metadata)
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

// encodeRecord encodes e at the start of buf (which has room for
// recordSize bytes) with zero recorded_at and version; the committer patches
// both in place (setRecordFields) once it knows them. It returns the record
// and the rest of buf.
func encodeRecord(buf []byte, stream string, e *eventstore.ProposedEvent) (rec, rest []byte) {
	n := recordSize(stream, e)
	b := buf[:offVar:n]
	b[0] = recordFormat
	clear(b[offRecordedAt:offID])
	copy(b[offID:], e.ID[:])
	b = appendString(b, e.Type)
	b = appendString(b, stream)
	b = appendString(b, e.Tenant)
	b = binary.AppendUvarint(b, uint64(len(e.Data)))
	b = append(b, e.Data...)
	b = append(b, e.Metadata...)
	if len(b) != n {
		panic("embedded: record size mismatch")
	}
	return b, buf[n:]
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func setRecordFields(b []byte, recordedAt int64, version int64) {
	binary.BigEndian.PutUint64(b[offRecordedAt:], uint64(recordedAt))
	binary.BigEndian.PutUint64(b[offVersion:], uint64(version))
}

// recordedAtOf reads only the timestamp (PositionAt's binary search).
func recordedAtOf(b []byte) (int64, error) {
	if len(b) < offVar || b[0] != recordFormat {
		return 0, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(b[offRecordedAt:])), nil
}

// header is a record decoded without copying: its slices point into bbolt's
// memory map and are valid only inside the transaction.
type header struct {
	recordedAt int64
	version    int64
	id         uuid.UUID
	typ        []byte
	stream     []byte
	tenant     []byte
	rest       []byte // uvarint len + data, then metadata
}

func decodeHeader(b []byte) (header, error) {
	var h header
	if len(b) < offVar || b[0] != recordFormat {
		return h, errCorrupt
	}
	h.recordedAt = int64(binary.BigEndian.Uint64(b[offRecordedAt:]))
	h.version = int64(binary.BigEndian.Uint64(b[offVersion:]))
	copy(h.id[:], b[offID:offVar])
	b = b[offVar:]
	var ok bool
	if h.typ, b, ok = readBytes(b); !ok {
		return h, errCorrupt
	}
	if h.stream, b, ok = readBytes(b); !ok {
		return h, errCorrupt
	}
	if h.tenant, b, ok = readBytes(b); !ok {
		return h, errCorrupt
	}
	h.rest = b
	return h, nil
}

func readBytes(b []byte) (field, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

// match applies f to the header's type, stream and tenant without allocating.
// The strings built here alias bbolt's memory and are not retained.
func (h *header) match(f *eventstore.Filter) bool {
	if f.IsZero() {
		return true
	}
	return f.MatchFields(unsafeString(h.typ), unsafeString(h.stream), unsafeString(h.tenant))
}

func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// event copies the header and its data out of bbolt's memory.
func (h *header) event(seq uint64) (eventstore.Event, error) {
	dataLen, k := binary.Uvarint(h.rest)
	if k <= 0 || dataLen > uint64(len(h.rest)-k) {
		return eventstore.Event{}, errCorrupt
	}
	// One allocation for the data and metadata; they are read-only afterwards.
	buf := make([]byte, len(h.rest)-k)
	copy(buf, h.rest[k:])
	ev := eventstore.Event{
		ID:         h.id,
		Stream:     string(h.stream),
		Type:       string(h.typ),
		Data:       buf[:dataLen:dataLen],
		Position:   eventstore.Position{Lo: seq},
		Version:    h.version,
		RecordedAt: time.Unix(0, h.recordedAt).UTC(),
	}
	if len(h.tenant) > 0 {
		ev.Tenant = string(h.tenant)
	}
	if meta := buf[dataLen:]; len(meta) > 0 {
		ev.Metadata = meta
	}
	return ev, nil
}

func decodeEvent(seq uint64, b []byte) (eventstore.Event, error) {
	h, err := decodeHeader(b)
	if err != nil {
		return eventstore.Event{}, fmt.Errorf("seq %d: %w", seq, err)
	}
	return h.event(seq)
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func versionKey(stream string, version int64) []byte {
	k := make([]byte, len(stream)+9)
	putVersionKey(k, stream, version)
	return k
}

// putVersionKey writes stream + 0x00 + version into k (len(stream)+9 bytes).
func putVersionKey(k []byte, stream string, version int64) {
	copy(k, stream)
	k[len(stream)] = 0
	binary.BigEndian.PutUint64(k[len(stream)+1:], uint64(version))
}

func putUint64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
