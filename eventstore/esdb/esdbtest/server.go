package esdbtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/serverfeatures"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
)

// Version is the server version the features call reports.
const Version = "24.10.0"

// Server is one in-process server. Its log survives Stop and Restart.
type Server struct {
	addr string
	log  *store

	mu      sync.Mutex
	grpc    *grpc.Server
	serving chan struct{} // closed when the current Serve returns
}

// Start starts a server on a free 127.0.0.1 port and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatalf("esdbtest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// New starts a server on a free 127.0.0.1 port. The caller stops it.
func New() (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s := &Server{addr: lis.Addr().String(), log: newStore()}
	s.serve(lis)
	return s, nil
}

// URL is the connection string of the server: esdb://127.0.0.1:PORT?tls=false.
func (s *Server) URL() string { return "esdb://" + s.addr + "?tls=false" }

// Addr is host:port.
func (s *Server) Addr() string { return s.addr }

// Stop closes the listener and every connection, ending the calls in flight
// (clients see the connection drop). The log is kept. Stop is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	g, done := s.grpc, s.serving
	s.grpc, s.serving = nil, nil
	s.mu.Unlock()
	if g == nil {
		return
	}
	g.Stop()
	<-done
}

// Restart stops the server if it runs and listens again on the same port,
// with the same log. It retries the listen for a few seconds while the port
// is not yet free.
func (s *Server) Restart() error {
	s.Stop()
	var lis net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if lis, err = net.Listen("tcp", s.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("esdbtest: listen again on %s: %w", s.addr, err)
	}
	s.serve(lis)
	return nil
}

// Len is the number of events in the log.
func (s *Server) Len() int {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	return len(s.log.all)
}

func (s *Server) serve(lis net.Listener) {
	g := grpc.NewServer(grpc.MaxRecvMsgSize(17 << 20))
	streams.RegisterStreamsServer(g, &streamsService{log: s.log})
	serverfeatures.RegisterServerFeaturesServer(g, featuresService{})
	done := make(chan struct{})
	s.mu.Lock()
	s.grpc, s.serving = g, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			_ = err // the listener failed; calls fail like a server that went away
		}
	}()
}

// featuresService answers the client's discovery of supported methods. The
// client only looks for batch append and persistent subscriptions, neither
// of which this server offers, so the client takes its plain code paths.
type featuresService struct {
	serverfeatures.UnimplementedServerFeaturesServer
}

func (featuresService) GetSupportedMethods(_ context.Context, _ *shared.Empty) (*serverfeatures.SupportedMethods, error) {
	const svc = "event_store.client.streams.streams"
	return &serverfeatures.SupportedMethods{
		EventStoreServerVersion: Version,
		Methods: []*serverfeatures.SupportedMethod{
			{ServiceName: svc, MethodName: "read"},
			{ServiceName: svc, MethodName: "append"},
		},
	}, nil
}

// record is one recorded event. Records never change once written.
type record struct {
	id              uuid.UUID
	stream          string
	revision        uint64
	commit, prepare uint64
	metadata        map[string]string // type, content-type, created
	custom, data    []byte
}

func (r *record) after(commit, prepare uint64) bool {
	return r.commit > commit || r.commit == commit && r.prepare > prepare
}

// store is the log: $all in order and each stream's records.
type store struct {
	mu      sync.Mutex
	all     []*record
	streams map[string][]*record
	next    uint64        // log position of the next record
	changed chan struct{} // closed and replaced on every append
}

func newStore() *store {
	// The first record sits past position 0, as on a real server whose log
	// starts with its own records.
	return &store{streams: map[string][]*record{}, next: 1 << 10, changed: make(chan struct{})}
}
