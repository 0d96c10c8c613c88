package api

import (
	"errors"

	"github.com/hooklog/hooklog/apikeys"
	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions"
)

// Deps are the services the API fronts. All are required; the caller starts
// the services (Subscriptions.Start, Keys.Start, Projector.Start) and owns
// their lifecycle.
type Deps struct {
	Store         eventstore.Store
	Subscriptions *subscriptions.Service
	Keys          *apikeys.Service
	// Projector serves the status, deliveries and redrive routes of a
	// subscription (a *projector.Projector).
	Projector Projector
}

func (d Deps) validate() error {
	switch {
	case d.Store == nil:
		return errors.New("api: Deps.Store is required")
	case d.Subscriptions == nil:
		return errors.New("api: Deps.Subscriptions is required")
	case d.Keys == nil:
		return errors.New("api: Deps.Keys is required")
	case d.Projector == nil:
		return errors.New("api: Deps.Projector is required")
	}
	return nil
}

func (d Deps) authenticator() authenticator { return keysAuth{keys: d.Keys} }
