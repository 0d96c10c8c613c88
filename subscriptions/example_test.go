package subscriptions_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions"
)

// The URL policy refuses loopback and private targets in every spelling,
// unless private networks are allowed (hooklog serve --dev).
func ExampleURLPolicy_CheckURL() {
	strict := subscriptions.URLPolicy{}
	dev := subscriptions.URLPolicy{AllowPrivateNetworks: true}
	for _, u := range []string{"http://0x7f.1:8080/hook", "http://[::ffff:10.0.0.1]/", "https://93.184.216.34/hook", "ftp://93.184.216.34/"} {
		err := strict.CheckURL(context.Background(), u)
		fmt.Printf("%-30s strict: forbidden=%-5v invalid=%-5v dev: %v\n", u,
			errors.Is(err, subscriptions.ErrForbiddenAddress), errors.Is(err, subscriptions.ErrInvalidURL),
			dev.CheckURL(context.Background(), u) == nil)
	}
	fmt.Println(strict.CheckAddr(netip.MustParseAddr("100.64.1.1")))
	// Output:
	// http://0x7f.1:8080/hook        strict: forbidden=true  invalid=false dev: true
	// http://[::ffff:10.0.0.1]/      strict: forbidden=true  invalid=false dev: true
	// https://93.184.216.34/hook     strict: forbidden=false invalid=false dev: true
	// ftp://93.184.216.34/           strict: forbidden=false invalid=true  dev: false
	// subscriptions: webhook target address is not globally reachable: 100.64.1.1, a shared/CGNAT address (100.64.0.0/10)
}

// A subscription without a tenant receives every tenant's events and those
// without one; a tenant's subscription only its own. Internal streams never
// match.
func ExampleSubscription_Matches() {
	all := subscriptions.Subscription{EventTypes: []string{"payment.*"}}
	acme := subscriptions.Subscription{EventTypes: []string{"payment.*"}, Tenant: "acme"}
	for _, e := range []eventstore.Event{
		{Stream: "order-1", Type: "payment.succeeded", Tenant: "acme"},
		{Stream: "order-2", Type: "payment.succeeded"},
		{Stream: "order-3", Type: "order.created", Tenant: "acme"},
		{Stream: "hooklog-subscriptions", Type: "payment.created"},
	} {
		fmt.Println(e.Stream, all.Matches(&e), acme.Matches(&e))
	}
	// Output:
	// order-1 true true
	// order-2 true false
	// order-3 false false
	// hooklog-subscriptions false false
}
