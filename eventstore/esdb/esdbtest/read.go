package esdbtest

import (
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
)

// filter is a compiled server-side filter: on the stream name or on the
// event type, a regular expression or a list of prefixes.
type filter struct {
	onType   bool
	re       *regexp.Regexp
	prefixes []string
	// every is how many scanned records a checkpoint is sent after
	// (window x multiplier), for subscriptions.
	every int
}

func compileFilter(o *streams.ReadReq_Options) (*filter, error) {
	fo := o.GetFilter()
	if fo == nil {
		return nil, nil
	}
	f := &filter{}
	var expr *streams.ReadReq_Options_FilterOptions_Expression
	switch x := fo.GetFilter().(type) {
	case *streams.ReadReq_Options_FilterOptions_StreamIdentifier:
		expr = x.StreamIdentifier
	case *streams.ReadReq_Options_FilterOptions_EventType:
		expr, f.onType = x.EventType, true
	default:
		return nil, status.Error(codes.InvalidArgument, "filter without a stream or event-type expression")
	}
	if expr.GetRegex() != "" {
		re, err := regexp.Compile(expr.GetRegex())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "filter regex: %v", err)
		}
		f.re = re
	}
	f.prefixes = expr.GetPrefix()
	window := 32
	if m := fo.GetMax(); m > 0 {
		window = int(m)
	}
	f.every = window * max(1, int(fo.GetCheckpointIntervalMultiplier()))
	return f, nil
}

func (f *filter) match(r *record) bool {
	if f == nil {
		return true
	}
	s := r.stream
	if f.onType {
		s = r.metadata["type"]
	}
	if f.re != nil {
		return f.re.MatchString(s)
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return len(f.prefixes) == 0
}

// Read serves reads (a count) and subscriptions, of $all or of one stream.
func (s *streamsService) Read(req *streams.ReadReq, srv streams.Streams_ReadServer) error {
	o := req.GetOptions()
	if o == nil {
		return status.Error(codes.InvalidArgument, "missing read options")
	}
	f, err := compileFilter(o)
	if err != nil {
		return err
	}
	asString := o.GetUuidOption().GetString_() != nil
	if o.GetSubscription() != nil {
		return s.subscribe(o, f, asString, srv)
	}
	var recs []*record
	if so := o.GetStream(); so != nil {
		name := string(so.GetStreamIdentifier().GetStreamName())
		var found bool
		recs, found = s.log.readStream(name, so, o.GetReadDirection() == streams.ReadReq_Options_Backwards)
		if !found {
			return srv.Send(&streams.ReadResp{Content: &streams.ReadResp_StreamNotFound_{
				StreamNotFound: &streams.ReadResp_StreamNotFound{StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(name)}}}})
		}
	} else if ao := o.GetAll(); ao != nil {
		recs = s.log.readAll(ao, o.GetReadDirection() == streams.ReadReq_Options_Backwards)
	} else {
		return status.Error(codes.InvalidArgument, "read of neither a stream nor $all")
	}
	n := o.GetCount()
	for _, r := range recs {
		if n == 0 {
			break
		}
		if !f.match(r) {
			continue
		}
		if err := srv.Send(eventResp(r, asString)); err != nil {
			return err
		}
		n--
	}
	return nil
}

// readAll returns the records a read of $all visits, in its direction:
// forwards from a position (inclusive), backwards from one (exclusive).
func (st *store) readAll(ao *streams.ReadReq_Options_AllOptions, backwards bool) []*record {
	st.mu.Lock()
	all := st.all
	st.mu.Unlock()
	var from int // forwards: first index; backwards: one past the first index
	switch x := ao.GetAllOption().(type) {
	case *streams.ReadReq_Options_AllOptions_Start:
		from = 0
	case *streams.ReadReq_Options_AllOptions_End:
		from = len(all)
	case *streams.ReadReq_Options_AllOptions_Position:
		c, p := x.Position.GetCommitPosition(), x.Position.GetPreparePosition()
		from = len(all)
		for i, r := range all {
			if !(r.commit < c || r.commit == c && r.prepare < p) { // r >= (c, p)
				from = i
				break
			}
		}
	}
	if !backwards {
		return all[from:]
	}
	out := make([]*record, 0, from)
	for i := from - 1; i >= 0; i-- {
		out = append(out, all[i])
	}
	return out
}

// readStream returns the records a read of a stream visits, in its
// direction, from a revision (inclusive either way).
func (st *store) readStream(name string, so *streams.ReadReq_Options_StreamOptions, backwards bool) ([]*record, bool) {
	st.mu.Lock()
	recs, ok := st.streams[name]
	st.mu.Unlock()
	if !ok {
		return nil, false
	}
	n := len(recs)
	if !backwards {
		switch x := so.GetRevisionOption().(type) {
		case *streams.ReadReq_Options_StreamOptions_End:
			return nil, true
		case *streams.ReadReq_Options_StreamOptions_Revision:
			if x.Revision >= uint64(n) {
				return nil, true
			}
			return recs[x.Revision:], true
		}
		return recs, true
	}
	last := n - 1
	switch x := so.GetRevisionOption().(type) {
	case *streams.ReadReq_Options_StreamOptions_Start:
		last = min(0, n-1)
	case *streams.ReadReq_Options_StreamOptions_Revision:
		if x.Revision < uint64(n) {
			last = int(x.Revision)
		}
	}
	out := make([]*record, 0, last+1)
	for i := last; i >= 0; i-- {
		out = append(out, recs[i])
	}
	return out, true
}

func recordedEvent(r *record, asString bool) *streams.ReadResp_ReadEvent_RecordedEvent {
	md := make(map[string]string, len(r.metadata))
	for k, v := range r.metadata {
		md[k] = v
	}
	return &streams.ReadResp_ReadEvent_RecordedEvent{
		Id:               uuidToProto(r.id, asString),
		StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(r.stream)},
		StreamRevision:   r.revision,
		PreparePosition:  r.prepare,
		CommitPosition:   r.commit,
		Metadata:         md,
		CustomMetadata:   r.custom,
		Data:             r.data,
	}
}

func eventResp(r *record, asString bool) *streams.ReadResp {
	return &streams.ReadResp{Content: &streams.ReadResp_Event{Event: &streams.ReadResp_ReadEvent{
		Event:    recordedEvent(r, asString),
		Position: &streams.ReadResp_ReadEvent_CommitPosition{CommitPosition: r.commit},
	}}}
}

// subscribe confirms, then sends what follows the start (exclusive), then one
// caught-up message, then live events as they are appended, until the call
// ends. A filtered subscription to $all also gets a checkpoint (the position
// of the last record scanned) every f.every scanned records.
func (s *streamsService) subscribe(o *streams.ReadReq_Options, f *filter, asString bool, srv streams.Streams_ReadServer) error {
	ctx := srv.Context()
	if err := srv.Send(&streams.ReadResp{Content: &streams.ReadResp_Confirmation{
		Confirmation: &streams.ReadResp_SubscriptionConfirmation{SubscriptionId: uuid.NewString()}}}); err != nil {
		return err
	}
	st := s.log
	so, ao := o.GetStream(), o.GetAll()
	if so == nil && ao == nil {
		return status.Error(codes.InvalidArgument, "subscription to neither a stream nor $all")
	}

	// next: index into $all or into the stream of the first record to visit.
	st.mu.Lock()
	var next int
	if ao != nil {
		switch x := ao.GetAllOption().(type) {
		case *streams.ReadReq_Options_AllOptions_End:
			next = len(st.all)
		case *streams.ReadReq_Options_AllOptions_Position:
			c, p := x.Position.GetCommitPosition(), x.Position.GetPreparePosition()
			next = len(st.all)
			for i, r := range st.all {
				if r.after(c, p) {
					next = i
					break
				}
			}
		}
	} else {
		recs := st.streams[string(so.GetStreamIdentifier().GetStreamName())]
		switch x := so.GetRevisionOption().(type) {
		case *streams.ReadReq_Options_StreamOptions_End:
			next = len(recs)
		case *streams.ReadReq_Options_StreamOptions_Revision:
			next = int(min(x.Revision+1, uint64(len(recs))))
		}
	}
	st.mu.Unlock()

	caughtUp, scanned := false, 0
	for {
		st.mu.Lock()
		recs := st.all
		if so != nil {
			recs = st.streams[string(so.GetStreamIdentifier().GetStreamName())]
		}
		changed := st.changed
		st.mu.Unlock()

		for ; next < len(recs); next++ {
			r := recs[next]
			if f.match(r) {
				if err := srv.Send(eventResp(r, asString)); err != nil {
					return err
				}
			}
			scanned++
			if f != nil && ao != nil && scanned >= f.every {
				scanned = 0
				if err := srv.Send(&streams.ReadResp{Content: &streams.ReadResp_Checkpoint_{Checkpoint: &streams.ReadResp_Checkpoint{
					CommitPosition: r.commit, PreparePosition: r.prepare}}}); err != nil {
					return err
				}
			}
		}
		if !caughtUp {
			caughtUp = true
			if err := srv.Send(&streams.ReadResp{Content: &streams.ReadResp_CaughtUp_{CaughtUp: &streams.ReadResp_CaughtUp{}}}); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
