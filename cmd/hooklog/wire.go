package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/mux"

	"github.com/hooklog/hooklog/eventstore"
)

// app is everything serve runs behind the HTTP server.
type app struct {
	handler http.Handler
	// drain is called when shutdown starts, before the HTTP server stops
	// accepting: long-running requests should return soon after.
	drain func()
	// close stops the components after the HTTP server has stopped.
	close func() error
}

// newApp wires the components on top of an open store.
func newApp(_ context.Context, _ *config, store eventstore.Store, log *slog.Logger, _ io.Writer) (*app, error) {
	r := mux.NewRouter()
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		if err := store.Ping(ctx); err != nil {
			log.Warn("readiness check failed", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "store unreachable"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}).Methods(http.MethodGet, http.MethodHead)
	return &app{handler: r, drain: func() {}, close: func() error { return nil }}, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// redactURL hides the password of a connection URL for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}
