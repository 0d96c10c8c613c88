package apikeys

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions/streamfold"
)

// Stream is the internal stream holding every key event.
const Stream = eventstore.InternalStreamPrefix + "apikeys"

// Event types of Stream.
const (
	TypeCreated = "apikey.created"
	TypeRevoked = "apikey.revoked"
)

// Errors.
var (
	// ErrUnauthorized: the key is unknown or revoked.
	ErrUnauthorized = errors.New("apikeys: unknown or revoked API key")
	// ErrNotFound: no active key with that id.
	ErrNotFound = errors.New("apikeys: key not found")
	// ErrNotStarted: a command was called before Start or after Stop.
	ErrNotStarted = streamfold.ErrNotStarted
	// ErrConflict: other processes kept changing keys while a command
	// retried; nothing was written by it. The request may be retried.
	ErrConflict = streamfold.ErrConflict
)

// Role is what a key may do.
type Role string

// Roles.
const (
	RoleAdmin    Role = "admin"    // everything
	RoleProducer Role = "producer" // append and read events
	RoleTenant   Role = "tenant"   // one tenant's subscriptions, events and replays
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleAdmin || r == RoleProducer || r == RoleTenant }

// KeyPrefix starts every key hooklog generates.
const KeyPrefix = "hlk_"

// ConfigKeyID is the ID of the key from Config.AdminKey, as Authenticate
// returns it. It is not a stored key: Revoke does not know it.
const ConfigKeyID = "config"

// Limits.
const MaxNameLen = 200

// Key is an API key as listed; the plaintext is never kept.
type Key struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Tenant    string    `json:"tenant,omitempty"` // set iff Role is tenant
	CreatedAt time.Time `json:"created_at"`
	// Prefix is the first characters of the key ("hlk_" and 8 more), for
	// telling keys apart in lists.
	Prefix string `json:"prefix"`
	// Generated marks the admin key EnsureAdmin made on first start.
	Generated bool `json:"generated,omitempty"`
}

// Config configures the Service.
type Config struct {
	// AdminKey (auth.admin_key) is always accepted as an admin key. It is
	// compared in constant time and never written to the log. Default empty:
	// EnsureAdmin generates a key on first start.
	AdminKey string
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger reports events that cannot be folded. Default slog.Default().
	Logger *slog.Logger
}

// Service manages keys and authenticates requests. All methods are safe for
// concurrent use.
type Service struct {
	cfg       Config
	adminHash [sha256.Size]byte // of cfg.AdminKey, when set
	fold      *streamfold.Folder

	mu        sync.RWMutex
	byID      map[string]*record
	byHash    map[[sha256.Size]byte]*record
	generated bool // an admin key was ever generated
}

type record struct {
	key  Key
	hash [sha256.Size]byte
}

// New returns a Service; call Start before use.
func New(store eventstore.Store, cfg Config) (*Service, error) {
	if store == nil {
		return nil, errors.New("apikeys: store is nil")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{cfg: cfg, byID: map[string]*record{}, byHash: map[[sha256.Size]byte]*record{}}
	if cfg.AdminKey != "" {
		s.adminHash = sha256.Sum256([]byte(cfg.AdminKey))
	}
	f, err := streamfold.New(store, streamfold.Config{Stream: Stream, Apply: s.apply, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	s.fold = f
	return s, nil
}

// Start folds the key stream and starts following it; it returns once the
// initial fold is done (ctx bounds that fold only).
func (s *Service) Start(ctx context.Context) error {
	if err := s.fold.Start(ctx); err != nil {
		return fmt.Errorf("apikeys: start: %w", err)
	}
	return nil
}

// Stop stops following the log. It is idempotent. Authenticate keeps working
// on the last state; commands return ErrNotStarted.
func (s *Service) Stop() { s.fold.Stop() }

// Sync catches up with the log now (another process's revocation is
// otherwise seen within about a second).
func (s *Service) Sync(ctx context.Context) error { return s.fold.Sync(ctx) }

type createdData struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Tenant    string    `json:"tenant,omitempty"`
	Hash      string    `json:"hash"` // SHA-256 of the key, hex
	Prefix    string    `json:"prefix"`
	Generated bool      `json:"generated,omitempty"`
	At        time.Time `json:"at"`
}

type revokedData struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

func (s *Service) apply(e *eventstore.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	switch e.Type {
	case TypeCreated:
		var d createdData
		if err = json.Unmarshal(e.Data, &d); err != nil {
			break
		}
		var h []byte
		if h, err = hex.DecodeString(d.Hash); err != nil || len(h) != sha256.Size {
			err = fmt.Errorf("bad hash %q", d.Hash)
			break
		}
		if d.Generated {
			s.generated = true
		}
		if _, dup := s.byID[d.ID]; dup {
			break
		}
		r := &record{key: Key{ID: d.ID, Name: d.Name, Role: d.Role, Tenant: d.Tenant, CreatedAt: d.At, Prefix: d.Prefix, Generated: d.Generated}}
		copy(r.hash[:], h)
		s.byID[d.ID] = r
		s.byHash[r.hash] = r
	case TypeRevoked:
		var d revokedData
		if err = json.Unmarshal(e.Data, &d); err != nil {
			break
		}
		if r := s.byID[d.ID]; r != nil {
			delete(s.byID, d.ID)
			delete(s.byHash, r.hash)
		}
	}
	if err != nil {
		s.cfg.Logger.Error("apikeys: skipping an event that cannot be folded", "version", e.Version, "type", e.Type, "err", err)
	}
}

// newKey returns a fresh key: "hlk_" + base64url (unpadded) of 32 random bytes.
func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func prefixOf(key string) string { return key[:min(len(key), len(KeyPrefix)+8)] }

func (s *Service) createEvent(name string, role Role, tenant string, generated bool) (eventstore.ProposedEvent, Key, string, error) {
	plaintext := newKey()
	h := sha256.Sum256([]byte(plaintext))
	d := createdData{
		ID: uuid.Must(uuid.NewV7()).String(), Name: name, Role: role, Tenant: tenant,
		Hash: hex.EncodeToString(h[:]), Prefix: prefixOf(plaintext), Generated: generated, At: s.cfg.Now().UTC(),
	}
	b, err := json.Marshal(d)
	if err != nil {
		return eventstore.ProposedEvent{}, Key{}, "", err
	}
	k := Key{ID: d.ID, Name: name, Role: role, Tenant: tenant, CreatedAt: d.At, Prefix: d.Prefix, Generated: generated}
	return eventstore.ProposedEvent{Type: TypeCreated, Data: b}, k, plaintext, nil
}

// EnsureAdmin makes sure an operator can get in. With Config.AdminKey set it
// does nothing. Otherwise, if no admin key was ever generated in this log, it
// generates one, stores its hash (apikey.created with generated: true) and
// returns the plaintext with created=true, for the caller to print once. A
// generated key that was later revoked is not replaced.
func (s *Service) EnsureAdmin(ctx context.Context) (plaintext string, created bool, err error) {
	if s.cfg.AdminKey != "" {
		return "", false, nil
	}
	appended, err := s.fold.Exec(ctx, func() ([]eventstore.ProposedEvent, error) {
		s.mu.RLock()
		done := s.generated
		s.mu.RUnlock()
		if done {
			return nil, nil
		}
		ev, _, p, err := s.createEvent("admin (generated on first start)", RoleAdmin, "", true)
		plaintext = p
		return []eventstore.ProposedEvent{ev}, err
	})
	if err != nil {
		return "", false, fmt.Errorf("apikeys: ensure admin: %w", err)
	}
	if len(appended) == 0 {
		return "", false, nil
	}
	return plaintext, true, nil
}

// Create makes a key and returns it with its plaintext, which is not kept
// anywhere: show it once. tenant is required iff role is RoleTenant. Invalid
// input returns a *eventstore.ValidationError (fields "name", "role",
// "tenant") and writes nothing.
func (s *Service) Create(ctx context.Context, name string, role Role, tenant string) (Key, string, error) {
	v := &eventstore.ValidationError{Fields: map[string]string{}}
	switch n := utf8.RuneCountInString(name); {
	case strings.TrimSpace(name) == "":
		v.Fields["name"] = "is required"
	case n > MaxNameLen:
		v.Fields["name"] = fmt.Sprintf("must be at most %d characters", MaxNameLen)
	}
	if !role.Valid() {
		v.Fields["role"] = `must be "admin", "producer" or "tenant"`
	}
	switch {
	case role == RoleTenant && tenant == "":
		v.Fields["tenant"] = "is required for a tenant key"
	case role != RoleTenant && tenant != "" && role.Valid():
		v.Fields["tenant"] = "is only for tenant keys"
	case tenant != "" && !eventstore.ValidTenant(tenant):
		v.Fields["tenant"] = "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
	}
	if len(v.Fields) > 0 {
		return Key{}, "", v
	}
	ev, key, plaintext, err := s.createEvent(name, role, tenant, false)
	if err != nil {
		return Key{}, "", err
	}
	if _, err := s.fold.Exec(ctx, func() ([]eventstore.ProposedEvent, error) {
		return []eventstore.ProposedEvent{ev}, nil
	}); err != nil {
		return Key{}, "", fmt.Errorf("apikeys: create: %w", err)
	}
	return key, plaintext, nil
}

// List returns the active keys, oldest first.
func (s *Service) List(_ context.Context) []Key {
	s.mu.RLock()
	out := make([]Key, 0, len(s.byID))
	for _, r := range s.byID {
		out = append(out, r.key)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Key) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out
}

func canonicalID(id string) string {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return ""
	}
	return u.String()
}

// Get returns one active key, or ErrNotFound.
func (s *Service) Get(_ context.Context, id string) (Key, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.byID[canonicalID(id)]
	if r == nil {
		return Key{}, ErrNotFound
	}
	return r.key, nil
}

// Revoke revokes a key: this process refuses it from now on, others within
// about a second. Unknown, malformed or already revoked ids return ErrNotFound.
func (s *Service) Revoke(ctx context.Context, id string) error {
	id = canonicalID(id)
	if id == "" {
		return ErrNotFound
	}
	_, err := s.fold.Exec(ctx, func() ([]eventstore.ProposedEvent, error) {
		s.mu.RLock()
		_, ok := s.byID[id]
		s.mu.RUnlock()
		if !ok {
			return nil, ErrNotFound
		}
		b, err := json.Marshal(revokedData{ID: id, At: s.cfg.Now().UTC()})
		return []eventstore.ProposedEvent{{Type: TypeRevoked, Data: b}}, err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("apikeys: revoke: %w", err)
	}
	return err
}

// Authenticate returns the key whose plaintext was presented, or
// ErrUnauthorized. The lookup is one map access by SHA-256 hash; the hashes
// (never the plaintexts) are compared in constant time, so timing says
// nothing about any key.
func (s *Service) Authenticate(_ context.Context, plaintext string) (Key, error) {
	if plaintext == "" {
		return Key{}, ErrUnauthorized
	}
	h := sha256.Sum256([]byte(plaintext))
	if s.cfg.AdminKey != "" && subtle.ConstantTimeCompare(h[:], s.adminHash[:]) == 1 {
		return Key{ID: ConfigKeyID, Name: "auth.admin_key", Role: RoleAdmin}, nil
	}
	s.mu.RLock()
	r := s.byHash[h]
	s.mu.RUnlock()
	if r == nil || subtle.ConstantTimeCompare(h[:], r.hash[:]) != 1 {
		return Key{}, ErrUnauthorized
	}
	return r.key, nil
}
