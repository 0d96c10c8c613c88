package eventstore

// StatePage holds one page of ScanState pairs copied into one buffer, so a
// backend can end its read transaction (or release its connection) before it
// calls the scan's callback. The zero value is empty and ready to use.
type StatePage struct {
	buf  []byte
	ends []int // per pair: end of key, end of value in buf
}

// Reset empties the page, keeping its memory.
func (pg *StatePage) Reset() { pg.buf, pg.ends = pg.buf[:0], pg.ends[:0] }

// Add copies one pair into the page.
func (pg *StatePage) Add(key, value []byte) {
	pg.buf = append(pg.buf, key...)
	pg.ends = append(pg.ends, len(pg.buf))
	pg.buf = append(pg.buf, value...)
	pg.ends = append(pg.ends, len(pg.buf))
}

// Len is the number of pairs in the page.
func (pg *StatePage) Len() int { return len(pg.ends) / 2 }

// Size is the number of key and value bytes in the page.
func (pg *StatePage) Size() int { return len(pg.buf) }

// Row returns pair i; its slices are valid until the next Reset.
func (pg *StatePage) Row(i int) (key, value []byte) {
	start := 0
	if i > 0 {
		start = pg.ends[2*i-1]
	}
	k, v := pg.ends[2*i], pg.ends[2*i+1]
	return pg.buf[start:k:k], pg.buf[k:v:v]
}
