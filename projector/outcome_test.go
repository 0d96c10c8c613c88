package projector_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

func dlResponse(code int, kv ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return &http.Response{StatusCode: code, Header: h, Body: http.NoBody}
}

// Classify on responses built by hand: every status class, and the forms of
// Retry-After. The same table against a real server is in delivery_test.go.
func TestClassifyResponses(t *testing.T) {
	t.Parallel()
	date := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	httpDate := func(t time.Time) string { return t.Format(http.TimeFormat) }
	cases := []struct {
		name       string
		resp       *http.Response
		kind       projector.OutcomeKind
		err        string
		retryAfter time.Duration
	}{
		{"200", dlResponse(200), projector.Succeeded, "", 0},
		{"201", dlResponse(201), projector.Succeeded, "", 0},
		{"204", dlResponse(204), projector.Succeeded, "", 0},
		{"299", dlResponse(299), projector.Succeeded, "", 0},
		{"301", dlResponse(301, "Location", "https://elsewhere.example/"), projector.Failed, "HTTP 301 redirect (not followed)", 0},
		{"304", dlResponse(304), projector.Failed, "HTTP 304 redirect (not followed)", 0},
		{"400", dlResponse(400), projector.Failed, "HTTP 400", 0},
		{"401", dlResponse(401), projector.Failed, "HTTP 401", 0},
		{"404", dlResponse(404), projector.Failed, "HTTP 404", 0},
		{"410", dlResponse(410), projector.Gone, "HTTP 410 (endpoint gone)", 0},
		{"410 ignores Retry-After", dlResponse(410, "Retry-After", "60"), projector.Gone, "HTTP 410 (endpoint gone)", 0},
		{"429 without Retry-After", dlResponse(429), projector.Failed, "HTTP 429", 0},
		{"429 Retry-After seconds", dlResponse(429, "Retry-After", "30"), projector.Failed, "HTTP 429 (retry after 30s)", 30 * time.Second},
		{"429 Retry-After 0", dlResponse(429, "Retry-After", "0"), projector.Failed, "HTTP 429", 0},
		{"429 Retry-After negative", dlResponse(429, "Retry-After", "-5"), projector.Failed, "HTTP 429", 0},
		{"429 Retry-After garbage", dlResponse(429, "Retry-After", "soon"), projector.Failed, "HTTP 429", 0},
		{"429 Retry-After capped", dlResponse(429, "Retry-After", "999999999999"), projector.Failed, "HTTP 429 (retry after 24h0m0s)", projector.MaxRetryAfter},
		{"503 Retry-After date vs Date", dlResponse(503, "Date", httpDate(date), "Retry-After", httpDate(date.Add(2*time.Minute))), projector.Failed, "HTTP 503 (retry after 2m0s)", 2 * time.Minute},
		{"503 Retry-After date in the past", dlResponse(503, "Date", httpDate(date), "Retry-After", httpDate(date.Add(-time.Hour))), projector.Failed, "HTTP 503", 0},
		{"503 Retry-After date capped", dlResponse(503, "Date", httpDate(date), "Retry-After", httpDate(date.Add(30*24*time.Hour))), projector.Failed, "HTTP 503 (retry after 24h0m0s)", projector.MaxRetryAfter},
		{"500 ignores Retry-After", dlResponse(500, "Retry-After", "60"), projector.Failed, "HTTP 500", 0},
		{"502", dlResponse(502), projector.Failed, "HTTP 502", 0},
	}
	for _, tc := range cases {
		o := projector.Classify(tc.resp, nil)
		if o.Kind != tc.kind || o.Err != tc.err || o.RetryAfter != tc.retryAfter || o.StatusCode != tc.resp.StatusCode {
			t.Errorf("%s: Classify = {%s %d %q %s}, want {%s %d %q %s}", tc.name,
				o.Kind, o.StatusCode, o.Err, o.RetryAfter, tc.kind, tc.resp.StatusCode, tc.err, tc.retryAfter)
		}
	}
	// An HTTP date without a Date header is taken relative to the clock.
	o := projector.Classify(dlResponse(503, "Retry-After", httpDate(time.Now().Add(time.Hour))), nil)
	if o.RetryAfter < 58*time.Minute || o.RetryAfter > time.Hour {
		t.Errorf("Retry-After one hour ahead, no Date header: RetryAfter = %s", o.RetryAfter)
	}
}

// Classify on transport errors as net/http returns them: short texts.
func TestClassifyErrors(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error {
		return &url.Error{Op: "Post", URL: "https://hooks.example/x", Err: err}
	}
	dial := func(err error) error {
		return wrap(&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, Err: err})
	}
	policyErr := subscriptions.URLPolicy{}.DialControl("tcp4", "127.0.0.1:9", nil)
	long := errors.New(strings.Repeat("é", 300))
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"connection refused", dial(&net.OpError{Op: "connect", Err: syscall.ECONNREFUSED}), "connection refused"},
		{"connection reset", wrap(&net.OpError{Op: "read", Err: syscall.ECONNRESET}), "connection reset by peer"},
		{"policy refusal", dial(policyErr), "refused by URL policy at connect time: 127.0.0.1, a loopback address (127.0.0.0/8)"},
		{"dns not found", dial(&net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}), "dns: no such host nope.invalid"},
		{"dns timeout", dial(&net.DNSError{Err: "i/o timeout", Name: "slow.example", IsTimeout: true}), "dns: timeout looking up slow.example"},
		{"canceled", wrap(context.Canceled), "canceled"},
		{"deadline", wrap(context.DeadlineExceeded), "timeout"},
		{"eof", wrap(io.EOF), "connection closed before a response"},
		{"other", wrap(errors.New("net/http: HTTP/1.x transport connection broken: malformed HTTP response")), "net/http: HTTP/1.x transport connection broken: malformed HTTP response"},
	}
	for _, tc := range cases {
		o := projector.Classify(nil, tc.err)
		if o.Kind != projector.Failed || o.Err != tc.want || o.StatusCode != 0 {
			t.Errorf("%s: Classify = {%s %d %q}, want {failed 0 %q}", tc.name, o.Kind, o.StatusCode, o.Err, tc.want)
		}
	}
	o := projector.Classify(nil, wrap(long))
	if len(o.Err) > 200 || !strings.HasSuffix(o.Err, "…") || !strings.HasPrefix(o.Err, "éé") {
		t.Errorf("a long error is kept as %d bytes %q, want at most 200 ending in …", len(o.Err), o.Err)
	}
	if o := projector.Classify(nil, nil); o.Kind != projector.Failed || o.Err != "no response" {
		t.Errorf("Classify(nil, nil) = %+v", o)
	}
}

func TestOutcomeKindString(t *testing.T) {
	t.Parallel()
	for k, want := range map[projector.OutcomeKind]string{
		projector.Succeeded: "succeeded", projector.Failed: "failed", projector.Gone: "gone", 0: "OutcomeKind(0)",
	} {
		if got := fmt.Sprint(k); got != want {
			t.Errorf("%d.String() = %q, want %q", int(k), got, want)
		}
	}
}
