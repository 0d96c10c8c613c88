package api

import (
	"errors"

	"github.com/hooklog/hooklog/eventstore"
)

// Deps are the services the API fronts.
type Deps struct {
	Store eventstore.Store

	// testAuth replaces Keys while apikeys is being written. TEMPORARY.
	testAuth authenticator
}

func (d Deps) validate() error {
	if d.Store == nil {
		return errors.New("api: Deps.Store is required")
	}
	return nil
}

func (d Deps) authenticator() authenticator { return d.testAuth }
