package eventstore

import "strings"

// Filter selects events. The zero Filter matches everything.
//
// Types and Streams hold exact names or prefixes written with a trailing '*'
// ("payment.*", "order-*"); an event matches when it matches any entry of each
// non-empty list. Tenant, when non-nil, keeps only events of that tenant ("" =
// events without a tenant). NoInternal drops the events of hooklog's internal
// streams (IsInternalStream), such as the large delivery-outcome events, so
// readers that never want them (the projector) do not decode them.
type Filter struct {
	Types      []string
	Streams    []string
	Tenant     *string
	NoInternal bool
}

// IsZero reports whether f matches every event.
func (f Filter) IsZero() bool {
	return len(f.Types) == 0 && len(f.Streams) == 0 && f.Tenant == nil && !f.NoInternal
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *Event) bool {
	return f.MatchFields(e.Type, e.Stream, e.Tenant)
}

// MatchFields is Match on the three fields a filter looks at, so backends can
// filter before decoding a whole event.
func (f Filter) MatchFields(typ, stream, tenant string) bool {
	if f.Tenant != nil && *f.Tenant != tenant {
		return false
	}
	if f.NoInternal && IsInternalStream(stream) {
		return false
	}
	return MatchAny(f.Types, typ) && MatchAny(f.Streams, stream)
}

// MatchAny reports whether name matches one of patterns (exact, or prefix with a
// trailing '*'). An empty pattern list matches everything.
func MatchAny(patterns []string, name string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if MatchPattern(p, name) {
			return true
		}
	}
	return false
}

// MatchPattern matches one pattern: "*" matches all, "a.*" matches names starting
// with "a.", anything else matches exactly.
func MatchPattern(pattern, name string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, prefix)
	}
	return pattern == name
}

// ValidPattern reports whether p is a usable type or stream pattern: non-empty,
// with at most one '*', and only at the end.
func ValidPattern(p string) bool {
	if p == "" || len(p) > 201 {
		return false
	}
	i := strings.IndexByte(p, '*')
	return i == -1 || i == len(p)-1
}

// InternalStreamPrefix starts the names of the streams hooklog keeps its own
// state in (subscriptions, API keys, replays, delivery outcomes). Producers may
// not append to them, the pull API hides them from non-admins, and they are
// never fanned out to subscriptions.
const InternalStreamPrefix = "hooklog-"

// IsInternalStream reports whether stream belongs to hooklog itself.
func IsInternalStream(stream string) bool { return strings.HasPrefix(stream, InternalStreamPrefix) }
