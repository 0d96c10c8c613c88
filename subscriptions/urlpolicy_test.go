package subscriptions

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

var testRecords = map[string][]string{
	"public.test":   {"93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"},
	"internal.test": {"10.1.2.3"},
	"loop.test":     {"127.0.0.1"},
	"loop6.test":    {"::1"},
	"mixed.test":    {"93.184.216.34", "192.168.0.10"},
	"meta.test":     {"169.254.169.254"},
	"ula.test":      {"fd00::1"},
}

// Hostile URLs: well-formed, but their target is not globally reachable.
// Refused by default, accepted with AllowPrivateNetworks.
var hostileURLs = []string{
	"http://127.0.0.1/",
	"http://127.0.0.1:8080/hooks",
	"http://127.1/",
	"http://127.0.1/",
	"http://2130706433/",
	"http://0177.0.0.1/",
	"http://0x7f.1/",
	"http://0x7F.0.0.1/",
	"http://0x7f000001/",
	"http://017700000001/",
	"http://127.000.000.001/",
	"http://127.0.0.1./",
	"http://0.0.0.0/",
	"http://0/",
	"http://[::1]/",
	"http://[0:0:0:0:0:0:0:1]:9000/",
	"http://[::]/",
	"http://[::ffff:127.0.0.1]/",
	"http://[::ffff:7f00:1]/",
	"http://[::ffff:8.8.8.8]/",
	"http://[::127.0.0.1]/",
	"http://[64:ff9b::7f00:1]/",
	"http://[64:ff9b::10.0.0.1]/",
	"http://[2002:7f00:1::1]/",
	"http://[2002:a00:1::]/",
	"http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", // Teredo, client 127.0.0.1
	"http://[fe80::1]/",
	"http://[fe80::1%25eth0]/",
	"http://[fc00::1]/",
	"http://[fd12:3456:789a::1]/",
	"http://[fec0::1]/",
	"http://[ff02::1]/",
	"http://[2001:db8::1]/",
	"http://10.0.0.1/",
	"http://10.255.255.255/",
	"http://172.16.5.4/",
	"http://172.31.0.1/",
	"http://192.168.1.1/",
	"http://169.254.169.254/latest/meta-data/",
	"http://100.64.0.1/",
	"http://198.18.0.1/",
	"http://198.19.255.254/",
	"http://192.0.2.1/",
	"http://198.51.100.7/",
	"http://203.0.113.9/",
	"http://192.0.0.8/",
	"http://224.0.0.1/",
	"http://239.255.255.250/",
	"http://240.0.0.1/",
	"http://255.255.255.255/",
	"http://localhost/",
	"http://localhost:8080/",
	"http://LOCALHOST./",
	"http://api.localhost/",
	"http://１２７.０.０.１/", // full-width digits: IDNA maps them to 127.0.0.1
	"http://internal.test/",
	"http://loop.test/",
	"http://loop6.test/",
	"http://mixed.test/",
	"http://meta.test/",
	"http://ula.test/",
}

// Malformed URLs: refused whatever the network policy.
var malformedURLs = []string{
	"",
	"example.com/hooks",
	"/hooks",
	"ftp://public.test/",
	"javascript:alert(1)",
	"http:public.test",
	"http:///hooks",
	"http://user:pass@public.test/",
	"http://user@public.test/",
	"http://public.test/#frag",
	"http://public.test/#",
	" http://public.test/",
	"http://public.test\\@127.0.0.1/",
	"http://public.test:0/",
	"http://public.test:99999/",
	"http://public.test:/",
	"http://1.2.3.08/",
	"http://999.1.1.1/",
	"http://1.2.3.4.5/",
	"http://0x100000000/",
	"http://foo.123/",
	"http://a..b/",
	"http://[public.test]/",
	"http://[127.0.0.1]/",
	"http://exa mple.com/",
}

// Good URLs: accepted whatever the network policy.
var goodURLs = []string{
	"https://public.test/hooks",
	"https://PUBLIC.test./hooks?x=1",
	"http://public.test:8443/a/b",
	"https://93.184.216.34/",
	"https://1572395042/", // 93.184.216.34 in decimal is still a public address
	"https://[2606:4700:4700::1111]/",
	"https://[64:ff9b::808:808]/", // NAT64 of 8.8.8.8
	"https://[2002:808:808::1]/",  // 6to4 of 8.8.8.8
	"https://not-registered.test/",
	"https://bücher.test/", // IDN, does not resolve here
	"https://192.0.0.9.sslip.test/",
}

func testPolicy(t *testing.T, allowPrivate bool) URLPolicy {
	return URLPolicy{AllowPrivateNetworks: allowPrivate, Resolver: testResolver(t, testRecords)}
}

func TestCheckURLHostileRefused(t *testing.T) {
	t.Parallel()
	p := testPolicy(t, false)
	for _, u := range hostileURLs {
		err := p.CheckURL(context.Background(), u)
		if !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("CheckURL(%q) = %v, want ErrForbiddenAddress", u, err)
			continue
		}
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Msg == "" {
			t.Errorf("CheckURL(%q): no PolicyError message: %v", u, err)
		}
	}
	if n := len(hostileURLs); n < 20 {
		t.Fatalf("only %d hostile URLs", n)
	}
}

func TestCheckURLHostileAllowedWithPrivateNetworks(t *testing.T) {
	t.Parallel()
	p := testPolicy(t, true)
	for _, u := range hostileURLs {
		if err := p.CheckURL(context.Background(), u); err != nil {
			t.Errorf("CheckURL(%q) with private networks allowed = %v, want nil", u, err)
		}
	}
}

func TestCheckURLMalformed(t *testing.T) {
	t.Parallel()
	for _, allow := range []bool{false, true} {
		p := testPolicy(t, allow)
		for _, u := range malformedURLs {
			if err := p.CheckURL(context.Background(), u); !errors.Is(err, ErrInvalidURL) {
				t.Errorf("allow=%v CheckURL(%q) = %v, want ErrInvalidURL", allow, u, err)
			}
		}
	}
}

func TestCheckURLGood(t *testing.T) {
	t.Parallel()
	for _, allow := range []bool{false, true} {
		p := testPolicy(t, allow)
		for _, u := range goodURLs {
			if err := p.CheckURL(context.Background(), u); err != nil {
				t.Errorf("allow=%v CheckURL(%q) = %v, want nil", allow, u, err)
			}
		}
	}
}

func TestCheckURLDefaultResolverLocalhost(t *testing.T) {
	t.Parallel()
	// The name is refused before any lookup, whatever the resolver says.
	if err := (URLPolicy{}).CheckURL(context.Background(), "http://localhost:9/"); !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("got %v", err)
	}
}

func TestCheckURLCancelledContext(t *testing.T) {
	t.Parallel()
	p := testPolicy(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.CheckURL(ctx, "https://public.test/"); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestParseLegacyIPv4(t *testing.T) {
	t.Parallel()
	ok := map[string]string{
		"127.0.0.1":      "127.0.0.1",
		"127.1":          "127.0.0.1",
		"127.0.1":        "127.0.0.1",
		"2130706433":     "127.0.0.1",
		"0177.0.0.1":     "127.0.0.1",
		"0x7f.1":         "127.0.0.1",
		"0X7F.0X0.1":     "127.0.0.1",
		"0x7f000001":     "127.0.0.1",
		"017700000001":   "127.0.0.1",
		"0":              "0.0.0.0",
		"0x":             "0.0.0.0",
		"1.2.3.4.":       "1.2.3.4",
		"10.65535":       "10.0.255.255",
		"4294967295":     "255.255.255.255",
		"00000001.2.3.4": "1.2.3.4",
	}
	for in, want := range ok {
		got, valid := ParseLegacyIPv4(in)
		if !valid || got != netip.MustParseAddr(want) {
			t.Errorf("ParseLegacyIPv4(%q) = %v, %v; want %s", in, got, valid, want)
		}
	}
	for _, in := range []string{"", ".", "1..2", "256.1.1.1", "1.256.1.1", "1.2.3.256", "10.16777216", "1.2.65536", "4294967296",
		"08", "0x1g", "1.2.3.4.5", "-1", "+1", "1e3", "0x7f.-1"} {
		if got, valid := ParseLegacyIPv4(in); valid {
			t.Errorf("ParseLegacyIPv4(%q) = %v, want invalid", in, got)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	t.Parallel()
	var p URLPolicy
	refused := []string{"0.1.2.3", "10.0.0.1", "100.127.255.255", "127.255.0.1", "169.254.0.1", "172.20.0.1",
		"192.0.0.170", "192.0.2.255", "192.88.99.1", "192.168.255.255", "198.18.0.0", "198.51.100.1",
		"203.0.113.1", "224.0.0.251", "255.255.255.255", "250.1.1.1",
		"::", "::1", "::ffff:1.2.3.4", "::1.2.3.4", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1", "100::1", "2001:2::1",
		"2001:10::1", "2001:db8::", "2002:c0a8:101::", "3fff::1", "5f00::1", "fc00::", "fdff::1", "fe80::1",
		"febf::1", "fec0::1", "ff0e::1", "4000::1", "1::1"}
	for _, s := range refused {
		if err := p.CheckAddr(netip.MustParseAddr(s)); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("CheckAddr(%s) = %v, want ErrForbiddenAddress", s, err)
		}
	}
	allowed := []string{"1.1.1.1", "8.8.8.8", "93.184.216.34", "100.63.255.255", "100.128.0.0", "172.15.255.255",
		"172.32.0.0", "192.0.3.1", "192.31.196.1", "198.17.255.255", "198.20.0.0", "223.255.255.255",
		"2606:4700:4700::1111", "2001:4860:4860::8888", "64:ff9b::808:808", "2002:808:808::", "2001:3::1",
		"2001:4:112::1", "2001:20::1", "2001:1::1", "2001:0:808:808::f7f7:f7f7", "2620:4f:8000::1"}
	for _, s := range allowed {
		if err := p.CheckAddr(netip.MustParseAddr(s)); err != nil {
			t.Errorf("CheckAddr(%s) = %v, want nil", s, err)
		}
	}
	if err := p.CheckAddr(netip.Addr{}); !errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("zero Addr accepted")
	}
	if err := (URLPolicy{AllowPrivateNetworks: true}).CheckAddr(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Errorf("allowed policy refused loopback: %v", err)
	}
}

// TestDialControl connects for real: the default policy refuses a loopback
// server at connect time, even through a name, and the permissive one reaches it.
func TestDialControl(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	client := func(p URLPolicy) *http.Client {
		d := &net.Dialer{Timeout: 2 * time.Second, Control: p.DialControl, Resolver: testResolver(t, testRecords)}
		tr := &http.Transport{DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	for _, host := range []string{"127.0.0.1", "loop.test", "[::ffff:127.0.0.1]"} {
		u := "http://" + net.JoinHostPort(host, port) + "/"
		if host[0] == '[' {
			u = "http://" + host + ":" + port + "/"
		}
		resp, err := client(URLPolicy{}).Get(u)
		if err == nil {
			resp.Body.Close()
			t.Errorf("GET %s with default policy succeeded", u)
		} else if !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("GET %s: %v, want ErrForbiddenAddress", u, err)
		}
	}
	resp, err := client(URLPolicy{AllowPrivateNetworks: true}).Get(srv.URL)
	if err != nil {
		t.Fatalf("GET with private networks allowed: %v", err)
	}
	resp.Body.Close()
	if err := (URLPolicy{}).DialControl("tcp", "not-an-address", nil); !errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("DialControl(unparsable) = %v", err)
	}
}
