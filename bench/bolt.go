package bench

import (
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// bareBolt is the engine reference of the embedded batch scenario: the
// events of a batch put into a bare bbolt file with the keys the embedded
// store keeps per event (the record under its sequence number, the event id,
// the stream version), one read-write transaction (two fsyncs) per batch,
// with the store's bbolt options. No validation, encoding, group commit or
// read-side work: what bbolt itself costs, so that the store's figure can be
// read against both the plain file and its engine.
type bareBolt struct {
	db     *bolt.DB
	seq    uint64
	stream string
	ver    uint64
}

var (
	bareEvents   = []byte("events")
	bareIDs      = []byte("ids")
	bareVersions = []byte("versions")
)

func newBareBolt(path, stream string) (*bareBolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, InitialMmapSize: 64 << 20})
	if err != nil {
		return nil, fmt.Errorf("bench: bare bbolt: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bareEvents, bareIDs, bareVersions} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bench: bare bbolt: %w", err)
	}
	return &bareBolt{db: db, stream: stream}, nil
}

// putBatch writes n records of value, as the store would write n events.
// One writer at a time (bbolt serializes write transactions anyway).
func (b *bareBolt) putBatch(n int, value []byte) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		events, ids, versions := tx.Bucket(bareEvents), tx.Bucket(bareIDs), tx.Bucket(bareVersions)
		events.FillPercent, ids.FillPercent, versions.FillPercent = 1.0, 0.9, 0.9
		for range n {
			b.seq++
			b.ver++
			seq := binary.BigEndian.AppendUint64(nil, b.seq)
			id := uuid.Must(uuid.NewV7())
			vkey := binary.BigEndian.AppendUint64(append([]byte(b.stream), 0), b.ver)
			if err := events.Put(seq, value); err != nil {
				return err
			}
			if err := ids.Put(id[:], seq); err != nil {
				return err
			}
			if err := versions.Put(vkey, seq); err != nil {
				return err
			}
		}
		return nil
	})
}

func (b *bareBolt) close() error { return b.db.Close() }
