package api

import (
	"errors"

	"github.com/hooklog/hooklog/apikeys"
	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions"
)

// Deps are the services the API fronts. All are required; the caller starts
// the services (Subscriptions.Start, Keys.Start) and owns their lifecycle.
type Deps struct {
	Store         eventstore.Store
	Subscriptions *subscriptions.Service
	Keys          *apikeys.Service
}

func (d Deps) validate() error {
	switch {
	case d.Store == nil:
		return errors.New("api: Deps.Store is required")
	case d.Subscriptions == nil:
		return errors.New("api: Deps.Subscriptions is required")
	case d.Keys == nil:
		return errors.New("api: Deps.Keys is required")
	}
	return nil
}

func (d Deps) authenticator() authenticator { return keysAuth{keys: d.Keys} }
