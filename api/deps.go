package api

import (
	"errors"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions"
)

// Deps are the services the API fronts. All are required; the caller starts
// the services (Subscriptions.Start) and owns their lifecycle.
type Deps struct {
	Store         eventstore.Store
	Subscriptions *subscriptions.Service

	// testAuth replaces Keys while apikeys is being written. TEMPORARY.
	testAuth authenticator
}

func (d Deps) validate() error {
	if d.Store == nil {
		return errors.New("api: Deps.Store is required")
	}
	if d.Subscriptions == nil {
		return errors.New("api: Deps.Subscriptions is required")
	}
	return nil
}

func (d Deps) authenticator() authenticator { return d.testAuth }
