package api

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Registry is where the API registers its collectors and what /metrics serves.
// *prometheus.Registry satisfies it.
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

type metrics struct {
	requests       *prometheus.CounterVec   // route, method, code
	duration       *prometheus.HistogramVec // route, method, code
	appendRequests *prometheus.CounterVec   // result: created, duplicate, rejected
	appendedEvents prometheus.Counter
	inflightPolls  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hooklog", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "hooklog", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "HTTP request latency by route template, method and status code (long-polls included).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method", "code"}),
		appendRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hooklog", Subsystem: "api", Name: "append_requests_total",
			Help: "Append requests by result: created, duplicate (idempotent retry) or rejected.",
		}, []string{"result"}),
		appendedEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "hooklog", Subsystem: "api", Name: "appended_events_total",
			Help: "Events written to the log through the HTTP API.",
		}),
		inflightPolls: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "hooklog", Subsystem: "api", Name: "pull_waiting_requests",
			Help: "GET /v1/events requests currently long-polling.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.appendRequests, m.appendedEvents, m.inflightPolls} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("api: Config.Registry already holds the API's metrics (one Registry per server): %w", err)
			}
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	// Pre-create the append result series so they read 0, not absent.
	for _, r := range []string{"created", "duplicate", "rejected"} {
		m.appendRequests.WithLabelValues(r)
	}
	return m, nil
}

func (m *metrics) observe(route, method string, code int, seconds float64) {
	c := strconv.Itoa(code)
	m.requests.WithLabelValues(route, method, c).Inc()
	m.duration.WithLabelValues(route, method, c).Observe(seconds)
}
