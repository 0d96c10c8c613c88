package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/hooklog/hooklog/apikeys"
)

// Role names, as apikeys stores them.
const (
	roleAdmin    = string(apikeys.RoleAdmin)
	roleProducer = string(apikeys.RoleProducer)
	roleTenant   = string(apikeys.RoleTenant)
)

// principal is who an API key says the caller is.
type principal struct {
	KeyID  string
	Role   string
	Tenant string // set for tenant keys
}

func (p principal) isAdmin() bool { return p.Role == roleAdmin }

// noTenant is a tenant name no event or subscription can have.
const noTenant = "\x00"

// tenantScope returns the tenant the caller is confined to, and whether it is
// confined at all: admin and producer keys are not, tenant keys are. It fails
// closed: a request without a principal is confined to a tenant that matches
// nothing.
func (p principal) tenantScope() (string, bool) {
	switch p.Role {
	case roleAdmin, roleProducer:
		return "", false
	case roleTenant:
		return p.Tenant, true
	}
	return noTenant, true
}

// authenticator resolves a bearer token. It returns errUnauthenticated for an
// unknown or revoked key.
type authenticator interface {
	authenticate(ctx context.Context, token string) (principal, error)
}

type principalKey struct{}

func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// bearerToken extracts the token of an "Authorization: Bearer <token>" header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// authorize authenticates the request and checks the key's role is one of roles.
func (s *Server) authorize(r *http.Request, roles []string) (*http.Request, error) {
	token, ok := bearerToken(r)
	if !ok {
		return r, errUnauthenticated
	}
	p, err := s.auth.authenticate(r.Context(), token)
	if err != nil {
		return r, err
	}
	allowed := false
	for _, role := range roles {
		if p.Role == role {
			allowed = true
			break
		}
	}
	if !allowed {
		return r, errForbidden
	}
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, p)), nil
}
