package esdbtest

import (
	"errors"
	"io"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
)

type streamsService struct {
	streams.UnimplementedStreamsServer
	log *store
}

// expectation is an append's expected revision: any, no stream, exists, or
// an exact revision (the last event's, 0-based).
type expectation struct {
	kind     int // 0 any, 1 no stream, 2 exists, 3 exact
	revision uint64
}

// Append reads the options, then the proposed events, and writes them
// atomically under the server's rules:
//
//   - exact revision or no stream: written when the stream is there; when the
//     stream is past it and the events that follow it have the proposed ids
//     in order, the call is idempotent (success, nothing written); otherwise
//     wrong expected version.
//   - any, exists (when the stream exists): when the first id is already in
//     the stream and the proposed ids follow it in order, idempotent;
//     otherwise written.
func (s *streamsService) Append(srv streams.Streams_AppendServer) error {
	first, err := srv.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil || opts.GetStreamIdentifier() == nil {
		return status.Error(codes.InvalidArgument, "the first append message must carry the options")
	}
	stream := string(opts.GetStreamIdentifier().GetStreamName())
	if stream == "" {
		return status.Error(codes.InvalidArgument, "empty stream name")
	}
	var exp expectation
	switch o := opts.GetExpectedStreamRevision().(type) {
	case *streams.AppendReq_Options_Any:
	case *streams.AppendReq_Options_NoStream:
		exp.kind = 1
	case *streams.AppendReq_Options_StreamExists:
		exp.kind = 2
	case *streams.AppendReq_Options_Revision:
		exp = expectation{kind: 3, revision: o.Revision}
	default:
		return status.Error(codes.InvalidArgument, "missing expected revision")
	}

	var proposed []*streams.AppendReq_ProposedMessage
	for {
		m, err := srv.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		pm := m.GetProposedMessage()
		if pm == nil {
			return status.Error(codes.InvalidArgument, "expected a proposed message")
		}
		if pm.GetMetadata()["type"] == "" || pm.GetMetadata()["content-type"] == "" {
			return status.Error(codes.InvalidArgument, "a proposed message needs metadata type and content-type")
		}
		if _, err := uuidFromProto(pm.GetId()); err != nil {
			return status.Error(codes.InvalidArgument, "bad event id: "+err.Error())
		}
		proposed = append(proposed, pm)
	}
	return srv.SendAndClose(s.log.append(stream, exp, proposed))
}

func (st *store) append(stream string, exp expectation, proposed []*streams.AppendReq_ProposedMessage) *streams.AppendResp {
	ids := make([]uuid.UUID, len(proposed))
	for i, pm := range proposed {
		ids[i], _ = uuidFromProto(pm.GetId())
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	recs := st.streams[stream]
	current := int64(len(recs)) - 1 // -1: no stream

	// matchesAt reports whether the proposed ids follow the stream from
	// revision `from` on, all of them.
	matchesAt := func(from int64) bool {
		if from < 0 || from+int64(len(ids)) > int64(len(recs)) {
			return false
		}
		for i, id := range ids {
			if recs[from+int64(i)].id != id {
				return false
			}
		}
		return true
	}
	firstAt := func() int64 {
		if len(ids) == 0 {
			return -1
		}
		for i, r := range recs {
			if r.id == ids[0] {
				return int64(i)
			}
		}
		return -1
	}

	switch exp.kind {
	case 1, 3:
		want := int64(-1)
		if exp.kind == 3 {
			want = int64(exp.revision)
		}
		switch {
		case current == want:
		case current > want && matchesAt(want+1):
			return st.idempotent(recs, want+int64(len(ids)))
		default:
			return wrongVersion(exp, current)
		}
	case 2:
		if current < 0 {
			return wrongVersion(exp, current)
		}
		fallthrough
	case 0:
		if at := firstAt(); at >= 0 && matchesAt(at) {
			return st.idempotent(recs, at+int64(len(ids)-1))
		}
	}
	if len(proposed) == 0 { // nothing to write: the stream as it is
		return success(current, nil)
	}

	created := strconv.FormatInt(time.Now().UnixNano()/100, 10)
	commit := st.next
	for i, pm := range proposed {
		md := map[string]string{
			"type":         pm.GetMetadata()["type"],
			"content-type": pm.GetMetadata()["content-type"],
			"created":      created,
		}
		r := &record{
			id:       ids[i],
			stream:   stream,
			revision: uint64(len(recs)),
			commit:   commit,
			prepare:  st.next,
			metadata: md,
			custom:   append([]byte(nil), pm.GetCustomMetadata()...),
			data:     append([]byte(nil), pm.GetData()...),
		}
		// A record takes room in the log like on disk: a header plus its bytes.
		st.next += 128 + uint64(len(r.stream)+len(md["type"])+len(r.custom)+len(r.data))
		recs = append(recs, r)
		st.all = append(st.all, r)
	}
	st.streams[stream] = recs
	close(st.changed)
	st.changed = make(chan struct{})
	return success(int64(len(recs))-1, recs[len(recs)-1])
}

// idempotent answers a retry of an append that is already in the stream,
// with the revision and position of its last event.
func (st *store) idempotent(recs []*record, last int64) *streams.AppendResp {
	return success(last, recs[last])
}

func success(revision int64, last *record) *streams.AppendResp {
	ok := &streams.AppendResp_Success{}
	if revision < 0 {
		ok.CurrentRevisionOption = &streams.AppendResp_Success_NoStream{NoStream: &shared.Empty{}}
	} else {
		ok.CurrentRevisionOption = &streams.AppendResp_Success_CurrentRevision{CurrentRevision: uint64(revision)}
	}
	if last == nil {
		ok.PositionOption = &streams.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
	} else {
		ok.PositionOption = &streams.AppendResp_Success_Position{Position: &streams.AppendResp_Position{
			CommitPosition: last.commit, PreparePosition: last.prepare}}
	}
	return &streams.AppendResp{Result: &streams.AppendResp_Success_{Success: ok}}
}

func wrongVersion(exp expectation, current int64) *streams.AppendResp {
	w := &streams.AppendResp_WrongExpectedVersion{}
	if current < 0 {
		w.CurrentRevisionOption = &streams.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: &shared.Empty{}}
		w.CurrentRevisionOption_20_6_0 = &streams.AppendResp_WrongExpectedVersion_NoStream_20_6_0{NoStream_20_6_0: &shared.Empty{}}
	} else {
		w.CurrentRevisionOption = &streams.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: uint64(current)}
		w.CurrentRevisionOption_20_6_0 = &streams.AppendResp_WrongExpectedVersion_CurrentRevision_20_6_0{CurrentRevision_20_6_0: uint64(current)}
	}
	switch exp.kind {
	case 0:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: &shared.Empty{}}
	case 1:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: &shared.Empty{}}
	case 2:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: &shared.Empty{}}
	default:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: exp.revision}
	}
	return &streams.AppendResp{Result: &streams.AppendResp_WrongExpectedVersion_{WrongExpectedVersion: w}}
}

// uuidFromProto reads both encodings of an id.
func uuidFromProto(u *shared.UUID) (uuid.UUID, error) {
	if u == nil {
		return uuid.Nil, errors.New("missing")
	}
	if s := u.GetStructured(); s != nil {
		var id uuid.UUID
		for i := range 8 {
			id[i] = byte(uint64(s.GetMostSignificantBits()) >> (56 - 8*i))
			id[8+i] = byte(uint64(s.GetLeastSignificantBits()) >> (56 - 8*i))
		}
		return id, nil
	}
	return uuid.Parse(u.GetString_())
}

func uuidToProto(id uuid.UUID, asString bool) *shared.UUID {
	if asString {
		return &shared.UUID{Value: &shared.UUID_String_{String_: id.String()}}
	}
	var most, least uint64
	for i := range 8 {
		most = most<<8 | uint64(id[i])
		least = least<<8 | uint64(id[8+i])
	}
	return &shared.UUID{Value: &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
		MostSignificantBits: int64(most), LeastSignificantBits: int64(least)}}}
}
