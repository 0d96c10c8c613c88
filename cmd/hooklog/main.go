package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // the command ran and failed
	exitUsage  = 2 // bad flags, arguments or configuration
)

// runError marks an error that happened while a command ran (exit 1), as
// opposed to a usage error cobra found before (exit 2).
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// runE wraps a command body so its errors exit 1, except configuration
// errors, which exit 2.
func runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		var ce *ConfigError
		if err == nil || errors.As(err, &ce) {
			return err
		}
		return &runError{err}
	}
}

// run executes the command line and returns the exit status. Errors are
// printed to stderr as one line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ce *ConfigError
	var re *runError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "hooklog: configuration: %v\n", ce)
		return exitUsage
	case errors.As(err, &re):
		var ae *apiError
		if errors.As(err, &ae) {
			fmt.Fprintf(stderr, "hooklog: %v\n", ae) // one line per field error, on purpose
		} else {
			fmt.Fprintf(stderr, "hooklog: %s\n", oneLine(re.err.Error()))
		}
		return exitFailed
	default:
		fmt.Fprintf(stderr, "hooklog: %v (see hooklog --help)\n", err)
		return exitUsage
	}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "hooklog",
		Short: "hooklog: an event-sourced webhook projector",
		Long: `hooklog keeps an append-only log of domain events and turns matching events
into signed outbound webhooks, one independent route per subscription.

Run a server with "hooklog serve --dev" (embedded store in ./data, 127.0.0.1:8080).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newServeCmd(), newConfigCmd(), newEventsCmd(), newSubsCmd(), newKeysCmd(), newBenchCmd(), newListenCmd(), newReplayCmd())
	return root
}
