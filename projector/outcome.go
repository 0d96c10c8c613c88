package projector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hooklog/hooklog/subscriptions"
)

// OutcomeKind is what one delivery attempt means for the route. Retry,
// dead-letter and disable decisions are taken from the kind alone.
type OutcomeKind int

const (
	// Succeeded: the endpoint answered 2xx in time. The pair is delivered.
	Succeeded OutcomeKind = iota + 1
	// Failed: anything else that is not 410 (timeout, connection error, 3xx,
	// 4xx, 5xx, 429/503 with or without Retry-After). Retried on the
	// subscription's schedule (NextDelay) until it is exhausted.
	Failed
	// Gone: the endpoint answered 410. The subscription is disabled.
	Gone
)

// String is the lower-case name: succeeded, failed or gone.
func (k OutcomeKind) String() string {
	switch k {
	case Succeeded:
		return "succeeded"
	case Failed:
		return "failed"
	case Gone:
		return "gone"
	}
	return "OutcomeKind(" + strconv.Itoa(int(k)) + ")"
}

// Outcome is the result of one delivery attempt, as the attempts log records it.
type Outcome struct {
	Kind       OutcomeKind
	StatusCode int           // the HTTP status, 0 when no response arrived
	Err        string        // short, for a person: "timeout after 15s", "connection refused", "HTTP 500"; "" on success
	RetryAfter time.Duration // from Retry-After on 429 and 503 (capped at MaxRetryAfter), 0 if none
	Duration   time.Duration // from sending the request to the end of reading the response
	At         time.Time     // when the attempt started
}

// MaxRetryAfter caps the delay a Retry-After header can ask for.
const MaxRetryAfter = 24 * time.Hour

// maxErrLen bounds Outcome.Err: it is stored with every attempt.
const maxErrLen = 200

// Classify turns the result of one HTTP exchange into an Outcome. It is the
// one place outcomes are classified:
//
//   - 2xx: Succeeded.
//   - 410: Gone.
//   - 429 and 503: Failed, with RetryAfter from the Retry-After header
//     (delay-seconds, or an HTTP date taken relative to the response's Date
//     header, else the clock), capped at MaxRetryAfter.
//   - 3xx (redirects are never followed), other 4xx and 5xx: Failed, "HTTP <code>".
//   - err != nil: Failed with a short description: "timeout after 15s",
//     "connection refused", "refused by URL policy: …" (the connect-time
//     address check), "dns: no such host …", "tls: …".
//
// Classify reads only the status line and headers; closing the body is the
// caller's job. Duration and At are left zero for the caller to fill.
func Classify(resp *http.Response, err error) Outcome {
	return classify(resp, err, time.Now())
}

func classify(resp *http.Response, err error, now time.Time) Outcome {
	if err != nil || resp == nil {
		if err == nil {
			err = errors.New("no response")
		}
		o := Outcome{Kind: Failed, Err: describeError(err)}
		if resp != nil {
			o.StatusCode = resp.StatusCode
		}
		return o
	}
	return classifyStatus(resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Date"), now)
}

// classifyStatus is Classify of a response with the status code and the
// Retry-After and Date headers given.
func classifyStatus(code int, retryAfter, date string, now time.Time) Outcome {
	o := Outcome{StatusCode: code}
	switch {
	case code >= 200 && code <= 299:
		o.Kind = Succeeded
	case code == http.StatusGone:
		o.Kind = Gone
		o.Err = "HTTP 410 (endpoint gone)"
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		o.Kind = Failed
		o.RetryAfter = parseRetryAfter(retryAfter, date, now)
		o.Err = "HTTP " + strconv.Itoa(code)
		if o.RetryAfter > 0 {
			o.Err += " (retry after " + o.RetryAfter.String() + ")"
		}
	case code >= 300 && code <= 399:
		o.Kind = Failed
		o.Err = "HTTP " + strconv.Itoa(code) + " redirect (not followed)"
	default:
		o.Kind = Failed
		o.Err = "HTTP " + strconv.Itoa(code)
	}
	return o
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
// A date is taken relative to the response's Date header when it has one (so
// a skewed clock at either end does not matter), else to now. Anything
// unparsable, negative or in the past is 0; the result is capped at
// MaxRetryAfter.
func parseRetryAfter(v, date string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n >= int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		ref := now
		if dt, err := http.ParseTime(date); err == nil {
			ref = dt
		}
		d = t.Sub(ref)
	} else {
		return 0
	}
	return min(max(d, 0), MaxRetryAfter)
}

// timeoutError is the error of an attempt that ran out of its timeout.
type timeoutError struct{ after time.Duration }

func (e *timeoutError) Error() string { return "timeout after " + e.after.String() }

// describeError turns a transport error into a short text for the attempts log.
func describeError(err error) string {
	var te *timeoutError
	var pe *subscriptions.PolicyError
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var recErr tls.RecordHeaderError
	switch {
	case errors.As(err, &te):
		return te.Error()
	case errors.As(err, &pe):
		return short("refused by URL policy at connect time: " + pe.Msg)
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return short("dns: no such host " + dnsErr.Name)
		}
		if dnsErr.IsTimeout {
			return short("dns: timeout looking up " + dnsErr.Name)
		}
		return short("dns: " + dnsErr.Err + " (" + dnsErr.Name + ")")
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.As(err, &unknownAuth):
		return "tls: certificate signed by unknown authority"
	case errors.As(err, &hostErr):
		return short("tls: " + hostErr.Error())
	case errors.As(err, &invalidCert):
		return short("tls: " + invalidCert.Error())
	case errors.As(err, &certErr):
		return short("tls: " + certErr.Err.Error())
	case errors.As(err, &recErr):
		return "tls: server did not answer with TLS"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before a response"
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return "timeout"
	}
	// Drop net/http's `Post "https://…": ` prefix: the URL is known.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return short(fmt.Sprintf("%s: %v", oe.Op, oe.Err))
	}
	return short(err.Error())
}

func short(s string) string {
	if len(s) <= maxErrLen {
		return s
	}
	cut := maxErrLen - len("…")
	for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "…"
}
