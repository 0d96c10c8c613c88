// Package listen is the receiver behind `hooklog listen`: a local HTTP
// endpoint for trying hooklog out and for debugging an integration, as
// `stripe listen` is for Stripe. Point a subscription at it and it prints each
// delivery on two lines (time, event type, webhook-id, how many times it has
// seen that id, the replay marker, whether the Standard Webhooks signature is
// valid, the status it answered; then stream, tenant, position and the data)
// and answers with a chosen status, so retries, Retry-After and 410 can be
// watched from the receiving end.
//
// Signatures are checked with the official Standard Webhooks verifier
// (github.com/standard-webhooks/standard-webhooks/libraries) when a secret is
// given, including its five-minute timestamp tolerance; a delivery signed by
// any of the secrets in webhook-signature (a rotation) is valid.
//
// The handler (Handler) and the printer live here; cmd/hooklog only wires the
// flags.
package listen
