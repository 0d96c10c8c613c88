// Package apikeys owns hooklog's API keys as events in the log: apikey.created
// and apikey.revoked in the internal stream "hooklog-apikeys", folded into a
// read model that authenticates requests in O(1) by the key's SHA-256 hash.
//
// Roles are admin (everything), producer (append and read events) and tenant
// (one tenant's subscriptions and events). The key from auth.admin_key is
// always accepted as admin and never stored; without one, EnsureAdmin
// generates an admin key on first start, stores its hash and returns the
// plaintext once for the operator.
//
// Only hashes reach the log. A key is 32 random bytes, so a fast hash is as
// good as a slow KDF here: there is no dictionary to guess from, and 2^256
// candidates cannot be enumerated at any speed.
package apikeys
