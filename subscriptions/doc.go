// Package subscriptions owns the subscription aggregate: the commands that
// change webhook endpoints (create, update, pause, resume, rotate secret,
// disable, delete) as events in the internal stream "hooklog-subscriptions",
// the read model folded from that stream and kept current by following the
// log, filter matching for the projector, and URLPolicy, the rule for which
// webhook targets are acceptable (checked at creation and again at connect
// time by the delivery dialer).
//
// The log is the only source of truth: Start folds the stream (its length is
// the number of subscription changes, not the size of the log), and a change
// made by another process shows within about a second.
//
// Custom headers may not override what hooklog sets itself (Content-Type,
// the webhook-* signature headers, Host, Content-Length, User-Agent and the
// hop-by-hop headers). Authorization is allowed, so an endpoint behind a
// gateway can require a static token. Signing secrets and header values are
// stored in the internal stream in plain text (HMAC needs the secret itself):
// only admin keys can read internal streams.
package subscriptions
