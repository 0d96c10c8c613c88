package projector_test

// TEMPORARY: an in-memory eventstore.StateStore used only until the embedded
// and postgres stores implement StateStore themselves. Its CommitState is not
// atomic with the log append; it is for developing the engine, not for the
// final tests.

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"strings"
	"sync"

	"github.com/hooklog/hooklog/eventstore"
)

type memState struct {
	store eventstore.Store
	mu    sync.Mutex
	kv    map[string][]byte // bucket + "\x00" + key
}

func newMemState(s eventstore.Store) *memState { return &memState{store: s, kv: map[string][]byte{}} }

func (m *memState) CommitState(ctx context.Context, c eventstore.StateCommit) ([]eventstore.AppendResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []eventstore.AppendResult
	for _, a := range c.Appends {
		r, err := m.store.Append(ctx, a)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	for _, op := range c.Ops {
		k := op.Bucket + "\x00" + string(op.Key)
		switch {
		case op.DeletePrefix:
			for kk := range m.kv {
				if strings.HasPrefix(kk, k) {
					delete(m.kv, kk)
				}
			}
		case op.Delete:
			delete(m.kv, k)
		default:
			m.kv[k] = bytes.Clone(op.Value)
		}
	}
	return out, nil
}

func (m *memState) GetState(ctx context.Context, bucket string, key []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.kv[bucket+"\x00"+string(key)]
	if !ok {
		return nil, eventstore.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (m *memState) ScanState(ctx context.Context, p eventstore.ScanParams, fn func(key, value []byte) error) error {
	m.mu.Lock()
	pre := p.Bucket + "\x00"
	var keys []string
	for k := range m.kv {
		if strings.HasPrefix(k, pre+string(p.Prefix)) {
			kk := k[len(pre):]
			if p.After != nil {
				c := strings.Compare(kk, string(p.After))
				if (!p.Reverse && c <= 0) || (p.Reverse && c >= 0) {
					continue
				}
			}
			keys = append(keys, kk)
		}
	}
	sort.Strings(keys)
	if p.Reverse {
		for i, j := 0, len(keys)-1; i < j; i, j = i+1, j-1 {
			keys[i], keys[j] = keys[j], keys[i]
		}
	}
	if p.Limit > 0 && len(keys) > p.Limit {
		keys = keys[:p.Limit]
	}
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = bytes.Clone(m.kv[pre+k])
	}
	m.mu.Unlock()
	for i, k := range keys {
		if err := fn([]byte(k), vals[i]); err != nil {
			if errors.Is(err, eventstore.ErrStopScan) {
				return nil
			}
			return err
		}
	}
	return nil
}
