package embedded_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
)

func setOp(bucket, key string, value []byte) eventstore.StateOp {
	return eventstore.StateOp{Bucket: bucket, Key: []byte(key), Value: value}
}

// TestScanStateCallsBackIntoTheStore: fn runs outside any read transaction,
// so it may commit (here: move each visited key to another bucket, growing
// the file) while a scan over several pages of keys goes on, and the scan still
// visits every key once, in order.
func TestScanStateCallsBackIntoTheStore(t *testing.T) {
	t.Parallel()
	s, err := embedded.Open(embedded.Config{Path: t.TempDir(), NoSync: true}) // NoSync: speed only
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	const n = 1000
	var ops []eventstore.StateOp
	for i := range n {
		ops = append(ops, setOp("from", fmt.Sprintf("k%05d", i), bytes.Repeat([]byte("v"), 200)))
	}
	if _, err := s.CommitState(ctx, eventstore.StateCommit{Ops: ops}); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 16<<10)
	seen := 0
	var last []byte
	err = s.ScanState(ctx, eventstore.ScanParams{Bucket: "from"}, func(k, v []byte) error {
		if last != nil && bytes.Compare(k, last) <= 0 {
			return fmt.Errorf("key %q after %q", k, last)
		}
		last = bytes.Clone(k)
		seen++
		_, err := s.CommitState(ctx, eventstore.StateCommit{Ops: []eventstore.StateOp{
			{Bucket: "from", Key: k, Delete: true},
			setOp("to", string(k), big),
		}})
		return err
	})
	if err != nil || seen != n {
		t.Fatalf("ScanState: %v after %d keys, want %d", err, seen, n)
	}
	left := 0
	if err := s.ScanState(ctx, eventstore.ScanParams{Bucket: "from"}, func(k, v []byte) error { left++; return nil }); err != nil || left != 0 {
		t.Errorf("bucket from: %d keys left, %v", left, err)
	}
}

// TestScanStateLargeValues: pages end by size as well as by count; values
// larger than a page come through whole, in both directions, with limits.
func TestScanStateLargeValues(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	sizes := []int{300 << 10, 2 << 20, 10, 700 << 10, 700 << 10, 1 << 20, 0, 5}
	var ops []eventstore.StateOp
	var keys []string
	for i, n := range sizes {
		keys = append(keys, fmt.Sprintf("k%d", i))
		ops = append(ops, setOp("large", keys[i], bytes.Repeat([]byte{byte('a' + i)}, n)))
	}
	if _, err := s.CommitState(ctx, eventstore.StateCommit{Ops: ops}); err != nil {
		t.Fatal(err)
	}
	for _, reverse := range []bool{false, true} {
		for _, limit := range []int{0, 3} {
			var got []string
			err := s.ScanState(ctx, eventstore.ScanParams{Bucket: "large", Reverse: reverse, Limit: limit}, func(k, v []byte) error {
				i := int(k[1] - '0')
				if !bytes.Equal(v, bytes.Repeat([]byte{byte('a' + i)}, sizes[i])) {
					return fmt.Errorf("%s: %d-byte value, want %d", k, len(v), sizes[i])
				}
				got = append(got, string(k))
				return nil
			})
			want := len(keys)
			if limit > 0 {
				want = limit
			}
			if err != nil || len(got) != want {
				t.Fatalf("reverse %v limit %d: %v, %v", reverse, limit, got, err)
			}
			for j, k := range got {
				w := keys[j]
				if reverse {
					w = keys[len(keys)-1-j]
				}
				if k != w {
					t.Fatalf("reverse %v limit %d: %v", reverse, limit, got)
				}
			}
		}
	}
}

// TestStateRacingClose: StateStore calls racing Close succeed or fail with
// ErrClosed (or their context's error), never panic or hang, and every
// acknowledged commit is in the store after reopening.
func TestStateRacingClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for round := range 5 {
		s := openStore(t, dir)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			acked []string
		)
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					key := fmt.Sprintf("r%d/w%d/%04d", round, w, i)
					_, err := s.CommitState(ctx, eventstore.StateCommit{
						Appends: []eventstore.AppendParams{{Stream: "race", Events: []eventstore.ProposedEvent{event("race.commit")}}},
						Ops:     []eventstore.StateOp{setOp("race", key, []byte("v"))},
					})
					if err == nil {
						mu.Lock()
						acked = append(acked, key)
						mu.Unlock()
					}
					_, gerr := s.GetState(ctx, "race", []byte(key))
					serr := s.ScanState(ctx, eventstore.ScanParams{Bucket: "race", Limit: 10, Reverse: true}, func(k, v []byte) error { return nil })
					for _, e := range []error{err, serr} {
						if e != nil && !errors.Is(e, eventstore.ErrClosed) {
							t.Errorf("racing Close: %v", e)
						}
					}
					if gerr != nil && !errors.Is(gerr, eventstore.ErrClosed) && !errors.Is(gerr, eventstore.ErrNotFound) {
						t.Errorf("GetState racing Close: %v", gerr)
					}
					if errors.Is(err, eventstore.ErrClosed) || errors.Is(serr, eventstore.ErrClosed) {
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(round*7) * time.Millisecond)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		cancel()
		if t.Failed() {
			return
		}
		s2 := openStore(t, dir)
		for _, k := range acked {
			if _, err := s2.GetState(context.Background(), "race", []byte(k)); err != nil {
				t.Fatalf("acknowledged key %s after reopen: %v", k, err)
			}
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
