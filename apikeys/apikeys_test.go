package apikeys

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type backend struct {
	name string
	// open returns a fresh store owned by t and a function opening another
	// handle on the same data (embedded: only after the first is closed).
	open   func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store)
	shared bool // two handles may be open at once
}

var backends = []backend{
	{name: "embedded", open: func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store) {
		dir := t.TempDir()
		open := func(t *testing.T) eventstore.Store {
			s, err := embedded.Open(embedded.Config{Path: dir, NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}
		return open(t), open
	}},
	{name: "postgres", shared: true, open: func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store) {
		schema := pgtest.Schema(t)
		open := func(t *testing.T) eventstore.Store { return pgtest.Open(t, schema) }
		return open(t), open
	}},
}

func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b)
		})
	}
}

func start(t *testing.T, store eventstore.Store, cfg Config) *Service {
	t.Helper()
	s, err := New(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func head(t *testing.T, s eventstore.Store) eventstore.Position {
	t.Helper()
	h, err := s.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCreateAuthenticateRevoke(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, _ := b.open(t)
		svc := start(t, store, Config{})

		admin, adminKey, err := svc.Create(ctx, "ops", RoleAdmin, "")
		if err != nil {
			t.Fatal(err)
		}
		producer, producerKey, err := svc.Create(ctx, "order-service", RoleProducer, "")
		if err != nil {
			t.Fatal(err)
		}
		tenant, tenantKey, err := svc.Create(ctx, "acme integration", RoleTenant, "acme")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{adminKey, producerKey, tenantKey} {
			if !strings.HasPrefix(k, KeyPrefix) || len(k) != len(KeyPrefix)+43 {
				t.Fatalf("key %q: want hlk_ + 43 base64url characters", k)
			}
		}
		if tenant.Tenant != "acme" || tenant.Role != RoleTenant || tenant.Prefix != tenantKey[:12] || tenant.Name != "acme integration" {
			t.Fatalf("tenant key: %+v", tenant)
		}
		for plaintext, want := range map[string]Key{adminKey: admin, producerKey: producer, tenantKey: tenant} {
			got, err := svc.Authenticate(ctx, plaintext)
			if err != nil || got != want {
				t.Fatalf("Authenticate = %+v, %v; want %+v", got, err, want)
			}
		}
		for _, bad := range []string{"", "hlk_", adminKey + "x", adminKey[:len(adminKey)-1], strings.ToUpper(adminKey), "Bearer " + adminKey} {
			if _, err := svc.Authenticate(ctx, bad); !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Authenticate(%q) = %v", bad, err)
			}
		}
		if l := svc.List(ctx); !reflect.DeepEqual(l, []Key{admin, producer, tenant}) {
			t.Fatalf("List = %+v", l)
		}

		// Revocation takes effect at once in this process.
		if err := svc.Revoke(ctx, producer.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Authenticate(ctx, producerKey); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("revoked key: %v", err)
		}
		for _, id := range []string{producer.ID, "nope", "", ConfigKeyID, "00000000-0000-0000-0000-000000000000"} {
			if err := svc.Revoke(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Revoke(%q) = %v", id, err)
			}
		}
		if _, err := svc.Get(ctx, producer.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get revoked: %v", err)
		}
		if l := svc.List(ctx); len(l) != 2 {
			t.Fatalf("List after revoke = %+v", l)
		}

		// Only hashes reach the log; every event is internal and tenant-less.
		evs, err := store.ReadStream(ctx, eventstore.ReadStreamParams{Stream: Stream})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 4 {
			t.Fatalf("%d events", len(evs))
		}
		for _, e := range evs {
			for _, k := range []string{adminKey, producerKey, tenantKey} {
				if bytes.Contains(e.Data, []byte(k)) || bytes.Contains(e.Data, []byte(k[len(KeyPrefix):])) {
					t.Fatalf("plaintext key in the log: %s", e.Data)
				}
			}
			if e.Tenant != "" || !eventstore.IsInternalStream(e.Stream) {
				t.Fatalf("event %+v", e)
			}
		}
	})
}

func TestValidationWritesNothing(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, _ := b.open(t)
		svc := start(t, store, Config{})
		before := head(t, store)
		cases := []struct {
			name, keyName string
			role          Role
			tenant        string
			fields        []string
		}{
			{"no name", "", RoleAdmin, "", []string{"name"}},
			{"blank name", "  ", RoleProducer, "", []string{"name"}},
			{"long name", strings.Repeat("n", MaxNameLen+1), RoleProducer, "", []string{"name"}},
			{"bad role", "x", "root", "", []string{"role"}},
			{"tenant missing", "x", RoleTenant, "", []string{"tenant"}},
			{"tenant on admin", "x", RoleAdmin, "acme", []string{"tenant"}},
			{"tenant malformed", "x", RoleTenant, "a b", []string{"tenant"}},
			{"all bad", "", "", "", []string{"name", "role"}},
		}
		for _, c := range cases {
			_, k, err := svc.Create(ctx, c.keyName, c.role, c.tenant)
			var v *eventstore.ValidationError
			if !errors.As(err, &v) || !errors.Is(err, eventstore.ErrInvalid) || k != "" {
				t.Fatalf("%s: %v", c.name, err)
			}
			if len(v.Fields) != len(c.fields) {
				t.Fatalf("%s: fields %v, want %v", c.name, v.Fields, c.fields)
			}
			for _, f := range c.fields {
				if v.Fields[f] == "" {
					t.Fatalf("%s: fields %v, want %v", c.name, v.Fields, c.fields)
				}
			}
		}
		if head(t, store) != before {
			t.Fatal("a rejected create wrote to the log")
		}
	})
}

func TestEnsureAdmin(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, reopen := b.open(t)

		// With auth.admin_key: nothing generated, the configured key works.
		withKey := start(t, store, Config{AdminKey: "s3cret-admin"})
		if p, created, err := withKey.EnsureAdmin(ctx); err != nil || created || p != "" {
			t.Fatalf("EnsureAdmin with a configured key = %q, %v, %v", p, created, err)
		}
		k, err := withKey.Authenticate(ctx, "s3cret-admin")
		if err != nil || k.Role != RoleAdmin || k.ID != ConfigKeyID {
			t.Fatalf("configured key: %+v, %v", k, err)
		}
		if _, err := withKey.Authenticate(ctx, "s3cret-admin "); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("near miss accepted: %v", err)
		}
		withKey.Stop()

		// Without: the first start generates one, later starts do not.
		svc := start(t, store, Config{})
		plaintext, created, err := svc.EnsureAdmin(ctx)
		if err != nil || !created || !strings.HasPrefix(plaintext, KeyPrefix) {
			t.Fatalf("EnsureAdmin = %q, %v, %v", plaintext, created, err)
		}
		k, err = svc.Authenticate(ctx, plaintext)
		if err != nil || k.Role != RoleAdmin || !k.Generated {
			t.Fatalf("generated key: %+v, %v", k, err)
		}
		if _, err := svc.Authenticate(ctx, "s3cret-admin"); !errors.Is(err, ErrUnauthorized) {
			t.Fatal("the configured key must not be stored")
		}
		if p, created, err := svc.EnsureAdmin(ctx); err != nil || created || p != "" {
			t.Fatalf("second EnsureAdmin = %q, %v, %v", p, created, err)
		}
		// Revoked, it is not replaced (the operator configures auth.admin_key).
		if err := svc.Revoke(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		svc.Stop()
		if err := store.Close(); err != nil {
			t.Fatal(err)
		}
		store = reopen(t)
		again := start(t, store, Config{})
		if p, created, err := again.EnsureAdmin(ctx); err != nil || created || p != "" {
			t.Fatalf("EnsureAdmin after revoke and restart = %q, %v, %v", p, created, err)
		}
		if _, err := again.Authenticate(ctx, plaintext); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("revoked generated key after restart: %v", err)
		}
	})
}

func TestRestartRebuilds(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, reopen := b.open(t)
		svc := start(t, store, Config{})
		keys := map[string]Key{}
		var revoked string
		for i, role := range []Role{RoleAdmin, RoleProducer, RoleTenant, RoleProducer} {
			tenant := ""
			if role == RoleTenant {
				tenant = "globex"
			}
			k, p, err := svc.Create(ctx, "key", role, tenant)
			if err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				if err := svc.Revoke(ctx, k.ID); err != nil {
					t.Fatal(err)
				}
				revoked = p
				continue
			}
			keys[p] = k
		}
		want := svc.List(ctx)
		svc.Stop()
		if err := store.Close(); err != nil {
			t.Fatal(err)
		}
		rebuilt := start(t, reopen(t), Config{})
		if got := rebuilt.List(ctx); !reflect.DeepEqual(got, want) {
			t.Fatalf("rebuilt List differs:\n got %+v\nwant %+v", got, want)
		}
		for p, k := range keys {
			if got, err := rebuilt.Authenticate(ctx, p); err != nil || got != k {
				t.Fatalf("after restart: %+v, %v; want %+v", got, err, k)
			}
		}
		if _, err := rebuilt.Authenticate(ctx, revoked); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("revoked key after restart: %v", err)
		}
	})
}

// TestTwoServices: a revocation on one process is refused by another within
// a second; two first starts at once generate one admin key.
func TestTwoServices(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		storeA, reopen := b.open(t)
		storeB := storeA
		if b.shared {
			storeB = reopen(t)
		}
		a := start(t, storeA, Config{})
		bs := start(t, storeB, Config{})

		var wg sync.WaitGroup
		results := make([]bool, 2)
		for i, svc := range []*Service{a, bs} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, created, err := svc.EnsureAdmin(ctx)
				if err != nil {
					t.Error(err)
				}
				results[i] = created
			}()
		}
		wg.Wait()
		if results[0] == results[1] {
			t.Fatalf("EnsureAdmin created = %v: want exactly one", results)
		}

		k, plaintext, err := a.Create(ctx, "ci", RoleProducer, "")
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for {
			if _, err := bs.Authenticate(ctx, plaintext); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("B does not accept A's new key within 1s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := a.Revoke(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		revokedAt := time.Now()
		for {
			if _, err := bs.Authenticate(ctx, plaintext); errors.Is(err, ErrUnauthorized) {
				break
			}
			if time.Since(revokedAt) > time.Second {
				t.Fatal("B still accepts a key revoked on A after 1s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("revocation seen by the other service after %v", time.Since(revokedAt).Round(time.Millisecond))
	})
}

func TestCommandsNeedStart(t *testing.T) {
	t.Parallel()
	store, _ := backends[0].open(t)
	svc, err := New(store, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Create(context.Background(), "x", RoleAdmin, ""); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Create before Start: %v", err)
	}
	svc.Stop()
	svc.Stop()
}
