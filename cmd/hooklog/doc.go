// Command hooklog is the hooklog binary: `hooklog serve` runs the server, the
// other subcommands are tools for a person at a terminal (`hooklog config`,
// `hooklog bench`, and clients of a running server).
//
// This package is deliberately thin: it reads the configuration with viper
// (defaults < configs/hooklog.yaml or --config < HOOKLOG_* environment < flags),
// validates it, builds the components, serves, and drains on SIGTERM/SIGINT.
// A bad configuration exits with status 2 and one line naming the key.
package main
