// Package esdbtest is an in-process KurrentDB/EventStoreDB stand-in for tests:
// a gRPC server built from the client module's own generated packages
// (protos/streams and protos/serverfeatures), listening on a real 127.0.0.1
// port without TLS, so that the real github.com/EventStore/EventStore-Client-Go/v4
// client talks to it exactly as it talks to a server.
//
// It implements what that client calls for a single node (no gossip is asked
// for with a single-host connection string): server features; Append with the
// server's expected-revision rules and idempotent event ids; Read of $all and
// of streams, forwards and backwards, with stream and event-type filters; and
// catch-up subscriptions to $all and to streams (a confirmation first, then
// events, checkpoints for filtered $all subscriptions, and one caught-up
// message). The log lives in memory and survives Stop and Restart, which
// reopen the same port, so tests can make the server go away and come back.
//
// Every recorded event carries metadata "type", "content-type" and "created"
// (100 ns ticks since the Unix epoch): the client calls log.Fatalf without
// "created". Read responses of plain reads carry only events (or a
// stream-not-found message): the client panics on anything else there.
package esdbtest
