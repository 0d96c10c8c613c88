package embedded

import (
	"runtime"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// parallelValidateBytes is the JSON size from which validate splits an
// append across two goroutines.
const parallelValidateBytes = 16 << 10

// validate is p.Validate, with large appends checked as two halves in
// parallel: checking the JSON of data and metadata is most of an append's
// CPU time before its commit, and a lone appender leaves the other core idle.
// The halves' checks are the whole of Validate's (the stream, the expected
// version and each event on its own) except ids repeated across the halves,
// which are checked here first. If anything fails, the serial p.Validate runs
// for its exact error (Validate changes nothing when it fails).
func validate(p *eventstore.AppendParams) error {
	n := len(p.Events)
	if n < 2 || n > eventstore.MaxEventsPerAppend || runtime.GOMAXPROCS(0) < 2 {
		return p.Validate()
	}
	size := 0
	for i := range p.Events {
		size += len(p.Events[i].Data) + len(p.Events[i].Metadata)
	}
	if size < parallelValidateBytes {
		return p.Validate()
	}
	seen := make(map[uuid.UUID]struct{}, n)
	for i := range p.Events {
		if id := p.Events[i].ID; id != uuid.Nil {
			if _, dup := seen[id]; dup {
				return p.Validate()
			}
			seen[id] = struct{}{}
		}
	}
	a, b := *p, *p
	a.Events, b.Events = p.Events[:n/2:n/2], p.Events[n/2:]
	errA := make(chan error, 1)
	go func() { errA <- a.Validate() }()
	errB := b.Validate()
	if err := <-errA; err != nil || errB != nil {
		return p.Validate()
	}
	return nil
}
