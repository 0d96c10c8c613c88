package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hooklog/hooklog/apikeys"
)

func (s *Server) keyRoutes() {
	s.handle(http.MethodPost, "/v1/keys", adminsOnly, s.createKey)
	s.handle(http.MethodGet, "/v1/keys", adminsOnly, s.listKeys)
	s.handle(http.MethodDelete, "/v1/keys/{id}", adminsOnly, s.revokeKey)
}

// keysAuth authenticates bearer tokens with the apikeys service.
type keysAuth struct{ keys *apikeys.Service }

func (a keysAuth) authenticate(ctx context.Context, token string) (principal, error) {
	k, err := a.keys.Authenticate(ctx, token)
	if err != nil {
		if errors.Is(err, apikeys.ErrUnauthorized) {
			return principal{}, errUnauthenticated
		}
		return principal{}, fmt.Errorf("authenticate: %w", err)
	}
	return principal{KeyID: k.ID, Role: string(k.Role), Tenant: k.Tenant}, nil
}

// keyJSON is an API key on the wire; Key (the plaintext) only in the answer
// to create.
type keyJSON struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Role      string  `json:"role"`
	Tenant    *string `json:"tenant"` // null unless role is tenant
	Prefix    string  `json:"prefix"`
	CreatedAt string  `json:"created_at"`
	Key       string  `json:"key,omitempty"`
}

func toKeyJSON(k apikeys.Key, plaintext string) keyJSON {
	out := keyJSON{ID: k.ID, Name: k.Name, Role: string(k.Role), Prefix: k.Prefix, CreatedAt: formatTime(k.CreatedAt), Key: plaintext}
	if k.Tenant != "" {
		t := k.Tenant
		out.Tenant = &t
	}
	return out
}

type createKeyRequest struct {
	Name   string  `json:"name"`
	Role   string  `json:"role"`
	Tenant *string `json:"tenant"`
}

// createKey is POST /v1/keys; the plaintext key is shown only here.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) error {
	var req createKeyRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	tenant := ""
	if req.Tenant != nil {
		tenant = *req.Tenant
	}
	k, plaintext, err := s.deps.Keys.Create(r.Context(), req.Name, apikeys.Role(req.Role), tenant)
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, toKeyJSON(k, plaintext))
}

type keyList struct {
	Keys []keyJSON `json:"keys"`
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) error {
	keys := s.deps.Keys.List(r.Context())
	out := keyList{Keys: make([]keyJSON, len(keys))}
	for i, k := range keys {
		out.Keys[i] = toKeyJSON(k, "")
	}
	return writeJSON(w, http.StatusOK, out)
}

// revokeKey is DELETE /v1/keys/{id}: 204, or 404 for unknown or revoked ids.
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) error {
	id := mux.Vars(r)["id"]
	if err := s.deps.Keys.Revoke(r.Context(), id); err != nil {
		return fmt.Errorf("revoke key %q: %w", id, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
