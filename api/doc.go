// Package api is hooklog's HTTP surface: the gorilla/mux router, API-key
// authentication and role checks, JSON decoding with request limits, the
// problem+json (RFC 9457) error mapping, the pull API's long-poll, Prometheus
// metrics and the embedded OpenAPI document. It holds no business logic: every
// handler decodes, authorizes, calls the store or a service, and encodes.
//
// Handlers return errors; problemFor is the one function that turns an error
// into a status and a problem document.
//
// Decisions the contract (API.md) leaves open:
//
//   - Internal streams (prefix "hooklog-") cannot be appended to over HTTP by
//     any key (400, field "stream"). GET /v1/events hides them from every key;
//     an admin sees them only by asking with a streams pattern that starts with
//     "hooklog-" (e.g. streams=hooklog-*), and a non-admin asking that way gets
//     403. GET /v1/events/{id} of an internal event is 404 for non-admins, and
//     GET /v1/streams/{internal}/events is 403 for them.
//   - A tenant key reading GET /v1/streams/{stream}/events sees that stream
//     filtered to its own tenant's events. The response carries
//     next_from_version (the version after the last event examined), so paging
//     through a filtered stream never stops early.
//   - GET /v1/events/{id} of another tenant's event is 404 for a tenant key.
//   - A tenant key's subscription is its own tenant's; naming another tenant
//     in POST /v1/subscriptions is a 400 on "tenant". GET /v1/subscriptions
//     accepts ?tenant= for admin keys; tenant keys always see their own.
//     Another tenant's subscription id is 404 on every subscription route.
//   - Subscriptions and keys show "tenant": null when they have none, like
//     events; metadata of an event without one is {}.
//   - POST /v1/subscriptions/{id}/pause|resume|rotate-secret take no body (an
//     empty body or {}); they answer 200 with the subscription, and
//     rotate-secret includes the new secret.
//   - GET /v1/subscriptions/{id}/deliveries answers {"attempts": [...]},
//     newest first by the time of the attempt; each attempt has API.md's
//     fields plus "status" (succeeded, failed or dead: what the status filter
//     selects) and, on failed attempts that will be retried,
//     "next_attempt_at". status_code is null when no HTTP answer came, error
//     is null after a 2xx, replay_id is null for live deliveries. limit is
//     1..1000 (default 100); a malformed event_id is a 400.
//   - POST /v1/subscriptions/{id}/redrive takes no body (or {}) and answers
//     200 {"requeued": n}, the dead letters moved back to the retry queue.
//   - The status of a paused or disabled subscription is its persisted
//     checkpoint; last_success_at and failing_since are null when unknown.
//   - Problem types are URNs: urn:hooklog:problem:validation,
//     malformed-json, body-too-large, wrong-version, id-conflict, not-found,
//     unauthenticated, forbidden, method-not-allowed,
//     unavailable (store closed or unreachable: 503) and internal.
//   - Every request is logged at debug level (an access log); 5xx responses are
//     logged at error level with their cause.
//   - /healthz, /readyz, /metrics and /v1/openapi.json need no key.
package api
