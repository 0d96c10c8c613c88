package main

import (
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hooklog/hooklog/listen"
)

func newListenCmd() *cobra.Command {
	var (
		addr, secret, path string
		status             int
		retryAfter         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "listen [--addr 127.0.0.1:9000] [--secret whsec_…] [--status 200] [--path /]",
		Short: "Run a local webhook receiver that prints each delivery (like stripe listen)",
		Long: `Receive webhooks on a local address and print each delivery on two lines:
time, event type, webhook-id, how many times this id arrived, the replay marker,
whether the signature is valid (checked with --secret, the subscription's
whsec_ secret; "unchecked" without it), the status answered; then stream,
tenant, position and data. Every delivery is answered with --status, so
retries (500), back-off (429 with --retry-after) and disabling (410) can be
watched. Stops on Ctrl-C.

The server must be allowed to deliver to a local address: "hooklog serve --dev"
is, or set delivery.allow_private_networks.`,
		Example: `  hooklog listen --secret whsec_...            # in one terminal
  hooklog subs create http://127.0.0.1:9000/   # in another; prints the secret
  hooklog listen --status 503 --retry-after 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := listen.New(listen.Config{
				Secret: secret, Status: status, RetryAfter: retryAfter, Path: path, Out: cmd.OutOrStdout(),
			})
			if err != nil {
				return err // a bad flag: exit 2
			}
			return runE(func(cmd *cobra.Command, _ []string) error {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return err
				}
				if path == "" {
					path = "/"
				}
				check := "signatures checked with --secret"
				if secret == "" {
					check = "signatures not checked (pass --secret whsec_… to check them)"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "hooklog listen: receiving webhooks at http://%s%s, answering %d %s; %s. Ctrl-C stops.\n",
					ln.Addr(), path, status, http.StatusText(status), check)
				ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				return listen.Serve(ctx, ln, h)
			})(cmd, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:9000", "address to listen on (port 0 picks a free one, printed)")
	f.StringVar(&secret, "secret", "", "the subscription's signing secret (whsec_…) to verify signatures with")
	f.IntVar(&status, "status", 200, "HTTP status to answer every delivery with (200-599)")
	f.DurationVar(&retryAfter, "retry-after", 0, "send Retry-After with this delay (whole seconds), e.g. with --status 429")
	f.StringVar(&path, "path", "/", "URL path to receive at; other paths get 404")
	return cmd
}
