package api

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hooklog/hooklog/eventstore"
)

// Defaults of Config.
const (
	DefaultMaxBody int64         = 1 << 20 // 1 MiB
	DefaultMaxWait time.Duration = 60 * time.Second
)

// Limits of the read routes.
const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
	readyzTimeout    = 2 * time.Second
)

// Config tunes the HTTP layer. The zero Config is usable.
type Config struct {
	// MaxBody is the largest request body accepted; larger ones get 413 and
	// nothing is written. Default DefaultMaxBody (1 MiB).
	MaxBody int64
	// MaxWait caps the ?wait of GET /v1/events; longer waits are shortened to
	// it. Default DefaultMaxWait (60s).
	MaxWait time.Duration
	// Logger receives the access log (debug level) and 5xx causes (error
	// level). Default slog.Default().
	Logger *slog.Logger
	// Registry receives the API's metrics and is what GET /metrics serves.
	// Default: a new registry with the Go and process collectors.
	Registry Registry
}

func (c Config) withDefaults() Config {
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		c.Registry = reg
	}
	return c
}

func (c Config) validate() error {
	if c.MaxBody < 0 {
		return fmt.Errorf("api: Config.MaxBody must not be negative, got %d", c.MaxBody)
	}
	if c.MaxWait < 0 {
		return fmt.Errorf("api: Config.MaxWait must not be negative, got %s", c.MaxWait)
	}
	return nil
}

// Server is the HTTP API. It implements http.Handler.
type Server struct {
	cfg    Config
	deps   Deps
	store  eventstore.Store
	auth   authenticator
	router *mux.Router
	m      *metrics
	log    *slog.Logger
}

//go:embed openapi.json
var openapiJSON []byte

// handlerFunc is a route handler: it returns an error instead of writing one.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// Roles allowed on each kind of route.
var (
	anyKey               = []string{roleAdmin, roleProducer, roleTenant}
	producers            = []string{roleAdmin, roleProducer}
	subscribers          = []string{roleAdmin, roleTenant}
	adminsOnly           = []string{roleAdmin}
	noKey       []string = nil
)

// New builds the API. Every field of deps is required.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := deps.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, deps: deps, store: deps.Store, auth: deps.authenticator(), m: m, log: cfg.Logger}
	s.routes()
	return s, nil
}

// Handler returns s itself, for callers that want an http.Handler explicitly.
func (s *Server) Handler() http.Handler { return s }

func (s *Server) routes() {
	// SkipClean: an API answers 404 for unclean paths rather than redirecting.
	r := mux.NewRouter().SkipClean(true)
	s.router = r
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.fail(w, req, errNotFound)
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Allow", s.allowed(req))
		s.fail(w, req, errMethod)
	})

	s.handle(http.MethodGet, "/healthz", noKey, s.healthz)
	s.handle(http.MethodGet, "/readyz", noKey, s.readyz)
	metricsHandler := promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})
	s.handle(http.MethodGet, "/metrics", noKey, func(w http.ResponseWriter, r *http.Request) error {
		metricsHandler.ServeHTTP(w, r)
		return nil
	})
	s.handle(http.MethodGet, "/v1/openapi.json", noKey, func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		_, err := w.Write(openapiJSON)
		return err
	})

	// Events.
	s.handle(http.MethodPost, "/v1/streams/{stream}/events", producers, s.appendEvents)
	s.handle(http.MethodGet, "/v1/streams/{stream}/events", anyKey, s.readStream)
	s.handle(http.MethodGet, "/v1/events", anyKey, s.pullEvents)
	s.handle(http.MethodGet, "/v1/events/{id}", anyKey, s.getEvent)

	s.subscriptionRoutes()
	s.keyRoutes()
	s.replayRoutes()
}

// handle registers one route. roles nil means no key is needed.
func (s *Server) handle(method, path string, roles []string, h handlerFunc) {
	s.router.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec, ok := w.(*recorder); ok {
			rec.route = path
		}
		if roles != nil {
			var err error
			if r, err = s.authorize(r, roles); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	})).Methods(method)
}

// allowed lists the methods the request's path accepts (for 405's Allow).
func (s *Server) allowed(r *http.Request) string {
	out := ""
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodDelete} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		var match mux.RouteMatch
		if s.router.Match(r2, &match) && match.MatchErr == nil {
			if out != "" {
				out += ", "
			}
			out += m
		}
	}
	return out
}

// fail writes err as a problem document, logging server-side failures.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away (typically during a long-poll): nobody reads a
		// response. 499 is recorded in the metrics and the access log only.
		w.WriteHeader(499)
		return
	}
	p := problemFor(err)
	if p.Status >= 500 {
		s.log.ErrorContext(r.Context(), "api: request failed", "method", r.Method, "path", r.URL.Path, "status", p.Status, "err", err)
	}
	writeProblem(w, p)
}

// ServeHTTP limits the body, routes, and records metrics and the access log.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, route: "unmatched"}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(rec, r.Body, s.cfg.MaxBody)
	}
	s.router.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	d := time.Since(start)
	s.m.observe(rec.route, methodLabel(r.Method), rec.status, d.Seconds())
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "http request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("route", rec.route),
			slog.Int("status", rec.status), slog.Duration("duration", d), slog.String("remote", r.RemoteAddr))
	}
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions:
		return m
	}
	return "other"
}

// recorder remembers the status and the matched route template.
type recorder struct {
	http.ResponseWriter
	status int
	route  string
}

func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 {
		rec.status = code
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), readyzTimeout)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return &httpError{status: http.StatusServiceUnavailable, slug: "unavailable", detail: "the event store is not reachable", cause: err}
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
