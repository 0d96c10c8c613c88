package subscriptions

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/hooklog/hooklog/eventstore"
)

// Limits of a subscription's fields.
const (
	MaxDescriptionLen  = 1000 // characters
	MaxPatterns        = 100  // entries of event_types and of streams
	MaxHeaders         = 50
	MaxHeaderValueLen  = 4096
	MaxHeaderNameLen   = 256
	MinMaxInFlight     = 1
	MaxMaxInFlight     = 1000
	DefaultMaxInFlight = 16
	MaxRateLimit       = 1e6
)

// reservedHeaders are set by hooklog on every delivery or by the HTTP client
// itself, so a subscription may not set them. Authorization is allowed: it lets
// an endpoint behind a gateway require a static token (it is stored in the log
// like the signing secret).
var reservedHeaders = map[string]bool{
	"content-type": true, "content-length": true, "content-encoding": true, "transfer-encoding": true,
	"host": true, "connection": true, "keep-alive": true, "te": true, "trailer": true, "upgrade": true,
	"expect": true, "user-agent": true, "proxy-authorization": true, "proxy-connection": true,
}

// reservedHeaderPrefixes: the Standard Webhooks headers and the proxy ones.
var reservedHeaderPrefixes = []string{"webhook-", "proxy-"}

type fieldErrors struct{ v eventstore.ValidationError }

func (f *fieldErrors) add(field, format string, args ...any) {
	if f.v.Fields == nil {
		f.v.Fields = map[string]string{}
	}
	if _, ok := f.v.Fields[field]; !ok {
		f.v.Fields[field] = fmt.Sprintf(format, args...)
	}
}

func (f *fieldErrors) err() error {
	if len(f.v.Fields) == 0 {
		return nil
	}
	v := f.v
	return &v
}

func validateDescription(fe *fieldErrors, d string) {
	if n := utf8.RuneCountInString(d); n > MaxDescriptionLen {
		fe.add("description", "must be at most %d characters, got %d", MaxDescriptionLen, n)
	}
}

func validatePatterns(fe *fieldErrors, field string, list []string) {
	if len(list) > MaxPatterns {
		fe.add(field, "at most %d entries", MaxPatterns)
		return
	}
	for i, p := range list {
		if !eventstore.ValidPattern(p) {
			fe.add(fmt.Sprintf("%s[%d]", field, i), "must be an exact name or a prefix ending in a single '*' (e.g. payment.*)")
		}
	}
}

func validateRetry(fe *fieldErrors, r RetryPolicy) {
	if len(r.Schedule) > MaxRetrySchedule {
		fe.add("retry.schedule", "must have 1 to %d entries", MaxRetrySchedule)
	}
	for i, d := range r.Schedule {
		if d <= 0 {
			fe.add(fmt.Sprintf("retry.schedule[%d]", i), "must be a positive duration")
		}
	}
	if r.MaxAge < 0 {
		fe.add("retry.max_age", "must be positive")
	}
}

// withRetryDefaults fills a nil schedule and a zero max age from def.
func withRetryDefaults(r RetryPolicy, def RetryPolicy) RetryPolicy {
	if r.Schedule == nil {
		r.Schedule = def.Schedule
	}
	if r.MaxAge == 0 {
		r.MaxAge = def.MaxAge
	}
	return r
}

func validateMaxInFlight(fe *fieldErrors, n int) {
	if n < MinMaxInFlight || n > MaxMaxInFlight {
		fe.add("max_in_flight", "must be between %d and %d", MinMaxInFlight, MaxMaxInFlight)
	}
}

func validateRateLimit(fe *fieldErrors, r float64) {
	if math.IsNaN(r) || r < 0 || r > MaxRateLimit {
		fe.add("rate_limit", "must be between 0 (unlimited) and %g per second", MaxRateLimit)
	}
}

func validateHeaders(fe *fieldErrors, h map[string]string) {
	if len(h) > MaxHeaders {
		fe.add("headers", "at most %d headers", MaxHeaders)
		return
	}
	seen := make(map[string]string, len(h))
	for name, value := range h {
		field := "headers." + name
		lower := strings.ToLower(name)
		switch {
		case name == "" || len(name) > MaxHeaderNameLen || !isToken(name):
			fe.add(field, "is not a valid header name")
			continue
		case reservedHeaders[lower] || hasAnyPrefix(lower, reservedHeaderPrefixes):
			fe.add(field, "is set by hooklog and cannot be overridden")
			continue
		}
		if other, dup := seen[lower]; dup {
			fe.add(field, "duplicates header %q (names are case-insensitive)", other)
		}
		seen[lower] = name
		if len(value) > MaxHeaderValueLen {
			fe.add(field, "value must be at most %d bytes", MaxHeaderValueLen)
		} else if !validHeaderValue(value) {
			fe.add(field, "value must not contain CR, LF or other control characters")
		}
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// isToken reports whether s is an RFC 9110 token (a valid field name).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validHeaderValue: visible characters, spaces and tabs, valid UTF-8; no
// CR, LF, NUL or other control characters.
func validHeaderValue(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\t' {
			continue
		}
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
