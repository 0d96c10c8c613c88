package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/idna"
)

// Errors of the URL policy. CheckURL, CheckAddr and DialControl return a
// *PolicyError wrapping one of them.
var (
	// ErrInvalidURL: the URL is not an absolute http(s) URL hooklog can deliver to.
	ErrInvalidURL = errors.New("subscriptions: invalid webhook url")
	// ErrForbiddenAddress: the URL's host is, or resolves to, an address that is
	// not globally reachable, and private networks are not allowed.
	ErrForbiddenAddress = errors.New("subscriptions: webhook target address is not globally reachable")
)

// PolicyError explains why a URL or address was refused. Msg is meant for a
// person (the API puts it under the "url" field); Kind is ErrInvalidURL or
// ErrForbiddenAddress and matches with errors.Is.
type PolicyError struct {
	Kind error
	Msg  string
}

func (e *PolicyError) Error() string { return e.Kind.Error() + ": " + e.Msg }
func (e *PolicyError) Unwrap() error { return e.Kind }

func invalidURL(format string, args ...any) error {
	return &PolicyError{Kind: ErrInvalidURL, Msg: fmt.Sprintf(format, args...)}
}

func forbidden(format string, args ...any) error {
	return &PolicyError{Kind: ErrForbiddenAddress, Msg: fmt.Sprintf(format, args...)}
}

// MaxURLLength bounds a webhook URL.
const MaxURLLength = 2048

// DefaultLookupTimeout bounds the DNS lookup of CheckURL when ctx has no deadline.
const DefaultLookupTimeout = 5 * time.Second

// URLPolicy decides which webhook targets are acceptable. The zero value is the
// safe default: only globally reachable addresses, resolved with
// net.DefaultResolver.
//
// The same policy runs twice: CheckURL when a subscription is created or its URL
// changed, and DialControl on every connection the delivery dialer opens, so a
// name that later resolves elsewhere (DNS rebinding) is still refused.
type URLPolicy struct {
	// AllowPrivateNetworks turns the address check off (development, tests, or
	// deployments that deliver inside their own network). The URL's shape is
	// still checked. Default false.
	AllowPrivateNetworks bool
	// Resolver resolves host names in CheckURL. Default net.DefaultResolver.
	Resolver *net.Resolver
}

// CheckURL checks a webhook URL: absolute http or https, a host, no userinfo, no
// fragment, a valid port. Unless private networks are allowed, the host must be
// globally reachable: an IP literal in any spelling a resolver or browser
// accepts (dotted, decimal 2130706433, octal 0177.0.0.1, hex 0x7f.1, shortened
// 127.1, IPv6, IPv4-mapped IPv6) is checked with CheckAddr; a name is resolved
// and every address it resolves to must pass. A name that does not resolve (yet)
// is accepted: the connect-time check (DialControl) still applies. "localhost"
// and names under .localhost are refused without a lookup (RFC 6761).
func (p URLPolicy) CheckURL(ctx context.Context, raw string) error {
	host, err := parseWebhookURL(raw)
	if err != nil {
		return err
	}
	addr, isIP, err := parseHostIP(host)
	if err != nil {
		return err
	}
	if p.AllowPrivateNetworks {
		return nil
	}
	if isIP {
		return p.CheckAddr(addr)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return forbidden("host %q is a loopback name", host)
	}
	return p.checkName(ctx, host)
}

// parseWebhookURL checks the URL's shape and returns its host, normalized the
// way net/http normalizes it before dialing (IDNA to ASCII, lower case, one
// trailing dot removed), without brackets.
func parseWebhookURL(raw string) (string, error) {
	if raw == "" {
		return "", invalidURL("is required")
	}
	if len(raw) > MaxURLLength {
		return "", invalidURL("must be at most %d characters", MaxURLLength)
	}
	if strings.TrimSpace(raw) != raw {
		return "", invalidURL("must not start or end with white space")
	}
	if strings.ContainsRune(raw, '\\') {
		// Browsers read '\' as '/', Go does not: refuse the ambiguity.
		return "", invalidURL("must not contain a backslash")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", invalidURL("is not a valid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", invalidURL("must be an absolute http or https URL")
	}
	if u.Opaque != "" {
		return "", invalidURL("must be an absolute http or https URL (scheme://host/path)")
	}
	if u.User != nil {
		return "", invalidURL("must not contain credentials (user:password@); use headers instead")
	}
	if u.Fragment != "" || strings.HasSuffix(raw, "#") {
		return "", invalidURL("must not contain a fragment (#...): it is never sent to the server")
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "", invalidURL("port must be between 1 and 65535")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return "", invalidURL("has an empty port")
	}
	host := u.Hostname()
	if host == "" {
		return "", invalidURL("must have a host")
	}
	if strings.HasPrefix(u.Host, "[") {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", invalidURL("host %q in brackets must be an IPv6 address", host)
		}
		return host, nil
	}
	if !isASCII(host) {
		h, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return "", invalidURL("host %q is not a valid domain name: %v", host, err)
		}
		host = h
	}
	host = strings.ToLower(host)
	if h, ok := strings.CutSuffix(host, "."); ok && h != "" && !strings.HasSuffix(h, ".") {
		host = h
	}
	if strings.HasPrefix(host, ".") || strings.Contains(host, "..") || strings.HasSuffix(host, ".") {
		return "", invalidURL("host %q has an empty label", host)
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", invalidURL("host %q contains %q", host, c)
		}
	}
	return host, nil
}

// parseHostIP reports whether host (from parseWebhookURL) is an IP literal, and
// which. A host whose last label is numeric must be an IPv4 address in one of
// the legacy spellings, or it is invalid (as in the WHATWG URL standard).
func parseHostIP(host string) (netip.Addr, bool, error) {
	if strings.Contains(host, ":") {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return netip.Addr{}, false, invalidURL("host %q is not a valid IPv6 address", host)
		}
		return a.WithZone(""), true, nil
	}
	labels := strings.Split(host, ".")
	if !isNumericLabel(labels[len(labels)-1]) {
		return netip.Addr{}, false, nil
	}
	a, ok := ParseLegacyIPv4(host)
	if !ok {
		return netip.Addr{}, false, invalidURL("host %q is neither a domain name nor a valid IPv4 address", host)
	}
	return a, true, nil
}

func isNumericLabel(s string) bool {
	if s == "" {
		return false
	}
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		for _, c := range h {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
		return true
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ParseLegacyIPv4 parses the IPv4 spellings inet_aton(3) and browsers accept,
// which netip.ParseAddr and net.ParseIP refuse: one to four parts separated by
// dots, each decimal, octal (leading 0) or hexadecimal (leading 0x), the last
// part filling the remaining bytes ("127.1" = 127.0.0.1, "2130706433",
// "0x7f.1", "0177.0.0.1"). One trailing dot is allowed.
func ParseLegacyIPv4(s string) (netip.Addr, bool) {
	if h, ok := strings.CutSuffix(s, "."); ok {
		s = h
	}
	parts := strings.Split(s, ".")
	if len(parts) == 0 || len(parts) > 4 {
		return netip.Addr{}, false
	}
	var vals [4]uint64
	for i, p := range parts {
		v, ok := parseIPv4Part(p)
		if !ok {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	n := len(parts)
	for i := 0; i < n-1; i++ {
		if vals[i] > 255 {
			return netip.Addr{}, false
		}
	}
	last := vals[n-1]
	if last >= 1<<(8*(5-n)) {
		return netip.Addr{}, false
	}
	var ip uint32
	for i := 0; i < n-1; i++ {
		ip |= uint32(vals[i]) << (24 - 8*i)
	}
	ip |= uint32(last)
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}), true
}

func parseIPv4Part(p string) (uint64, bool) {
	if p == "" {
		return 0, false
	}
	base := 10
	switch {
	case len(p) >= 2 && (p[:2] == "0x" || p[:2] == "0X"):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true // "0x" is 0 for browsers
		}
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	}
	if len(p) > 32 {
		return 0, false
	}
	v, err := strconv.ParseUint(p, base, 64)
	if err != nil || v > 0xffffffff {
		return 0, false
	}
	return v, true
}

func (p URLPolicy) checkName(ctx context.Context, host string) error {
	r := p.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	lookupCtx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		lookupCtx, cancel = context.WithTimeout(ctx, DefaultLookupTimeout)
		defer cancel()
	}
	addrs, err := r.LookupNetIP(lookupCtx, "ip", host)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // the caller gave up: no verdict
		}
		return nil // not resolvable (yet): the connect-time check still applies
	}
	for _, a := range addrs {
		if err := p.CheckAddr(a.Unmap()); err != nil {
			return forbidden("host %q resolves to %s", host, err.(*PolicyError).Msg)
		}
	}
	return nil
}

// CheckAddr refuses addresses that are not globally reachable, per the IANA
// IPv4 and IPv6 special-purpose address registries, unless private networks are
// allowed. IPv4-mapped and IPv4-compatible IPv6 addresses are refused as such
// (DialControl unmaps what the kernel will really connect to before calling
// it); NAT64 (64:ff9b::/96), 6to4 and Teredo addresses are judged by the IPv4
// addresses they embed. Compared with the registry it is stricter in two
// places: all of 192.0.0.0/24 is refused, and IPv6 outside 2000::/3 (the only
// block allocated for global unicast) is refused.
func (p URLPolicy) CheckAddr(ip netip.Addr) error {
	if !ip.IsValid() {
		return forbidden("invalid address")
	}
	if p.AllowPrivateNetworks {
		return nil
	}
	ip = ip.WithZone("")
	if why := nonGlobalReason(ip); why != "" {
		return forbidden("%s, %s", ip, why)
	}
	return nil
}

// DialControl is a net.Dialer.Control function: it runs after the name was
// resolved and before connect(2), with the address really being dialed, and
// refuses it with a *PolicyError (ErrForbiddenAddress) when CheckAddr does.
func (p URLPolicy) DialControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return forbidden("cannot parse dial address %q", address)
	}
	return p.CheckAddr(ap.Addr().Unmap())
}

type special struct {
	prefix netip.Prefix
	why    string
}

func mustPrefixes(list ...string) []special {
	out := make([]special, 0, len(list)/2)
	for i := 0; i < len(list); i += 2 {
		out = append(out, special{netip.MustParsePrefix(list[i]), list[i+1]})
	}
	return out
}

// IPv4 blocks that are not globally reachable (IANA IPv4 special-purpose
// address registry, plus multicast and the reserved class E).
var v4Special = mustPrefixes(
	"0.0.0.0/8", `"this network" (0.0.0.0/8)`,
	"10.0.0.0/8", "a private address (10.0.0.0/8)",
	"100.64.0.0/10", "a shared/CGNAT address (100.64.0.0/10)",
	"127.0.0.0/8", "a loopback address (127.0.0.0/8)",
	"169.254.0.0/16", "a link-local address (169.254.0.0/16)",
	"172.16.0.0/12", "a private address (172.16.0.0/12)",
	"192.0.0.0/24", "an IETF protocol assignment (192.0.0.0/24)",
	"192.0.2.0/24", "a documentation address (192.0.2.0/24)",
	"192.88.99.0/24", "a deprecated 6to4 relay address (192.88.99.0/24)",
	"192.168.0.0/16", "a private address (192.168.0.0/16)",
	"198.18.0.0/15", "a benchmarking address (198.18.0.0/15)",
	"198.51.100.0/24", "a documentation address (198.51.100.0/24)",
	"203.0.113.0/24", "a documentation address (203.0.113.0/24)",
	"224.0.0.0/4", "a multicast address (224.0.0.0/4)",
	"255.255.255.255/32", "the broadcast address",
	"240.0.0.0/4", "a reserved address (240.0.0.0/4)",
)

// IPv6 blocks inside 2000::/3 that are globally reachable although a larger
// special block contains them (IANA IPv6 special-purpose registry).
var v6GlobalExceptions = mustPrefixes(
	"2001:1::1/128", "",
	"2001:1::2/128", "",
	"2001:1::3/128", "",
	"2001:3::/32", "",
	"2001:4:112::/48", "",
	"2001:20::/28", "",
	"2001:30::/28", "",
)

var v6Special = mustPrefixes(
	"::/128", "the unspecified address",
	"::1/128", "the loopback address",
	"::ffff:0:0/96", "an IPv4-mapped address",
	"::/96", "an IPv4-compatible address (deprecated)",
	"64:ff9b:1::/48", "a local-use NAT64 address (64:ff9b:1::/48)",
	"100::/64", "a discard-only address (100::/64)",
	"2001:db8::/32", "a documentation address (2001:db8::/32)",
	"2001::/23", "an IETF protocol assignment (2001::/23)",
	"3fff::/20", "a documentation address (3fff::/20)",
	"5f00::/16", "an SRv6 SID (5f00::/16)",
	"fc00::/7", "a unique local address (fc00::/7)",
	"fe80::/10", "a link-local address (fe80::/10)",
	"fec0::/10", "a site-local address (fec0::/10)",
	"ff00::/8", "a multicast address (ff00::/8)",
)

var (
	nat64   = netip.MustParsePrefix("64:ff9b::/96")
	sixToF  = netip.MustParsePrefix("2002::/16")
	teredo  = netip.MustParsePrefix("2001::/32")
	global6 = netip.MustParsePrefix("2000::/3")
)

// nonGlobalReason returns why ip is not globally reachable, or "".
func nonGlobalReason(ip netip.Addr) string {
	if ip.Is4() {
		for _, s := range v4Special {
			if s.prefix.Contains(ip) {
				return s.why
			}
		}
		return ""
	}
	b := ip.As16()
	embedded := func(kind string, off int) string {
		v4 := netip.AddrFrom4([4]byte{b[off], b[off+1], b[off+2], b[off+3]})
		if why := nonGlobalReason(v4); why != "" {
			return fmt.Sprintf("a %s address embedding %s, %s", kind, v4, why)
		}
		return ""
	}
	switch {
	case nat64.Contains(ip):
		return embedded("NAT64", 12)
	case sixToF.Contains(ip):
		return embedded("6to4", 2)
	case teredo.Contains(ip):
		if why := embedded("Teredo server", 4); why != "" {
			return why
		}
		for i := 12; i < 16; i++ {
			b[i] ^= 0xff // the client address is stored inverted
		}
		return embedded("Teredo client", 12)
	}
	for _, s := range v6GlobalExceptions {
		if s.prefix.Contains(ip) {
			return ""
		}
	}
	for _, s := range v6Special {
		if s.prefix.Contains(ip) {
			return s.why
		}
	}
	if !global6.Contains(ip) {
		return "outside the IPv6 global unicast space (2000::/3)"
	}
	return ""
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
