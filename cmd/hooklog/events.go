package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

func newEventsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Append events to a running server and tail its log",
	}
	cf.register(cmd)
	cmd.AddCommand(newEventsAppendCmd(&cf), newEventsTailCmd(&cf))
	return cmd
}

// readData reads a DATA argument: inline JSON, "-" for stdin, "@FILE".
func readData(arg string, stdin io.Reader) (json.RawMessage, error) {
	var b []byte
	var err error
	switch {
	case arg == "-":
		b, err = io.ReadAll(stdin)
	case strings.HasPrefix(arg, "@"):
		b, err = os.ReadFile(arg[1:])
	default:
		b = []byte(arg)
	}
	if err != nil {
		return nil, err
	}
	if !json.Valid(b) {
		return nil, &ConfigError{Key: "DATA", Problem: "is not valid JSON (give a JSON object, - for stdin, or @FILE)"}
	}
	return json.RawMessage(b), nil
}

func newEventsAppendCmd(cf *clientFlags) *cobra.Command {
	var id, tenant, expected, metadata string
	cmd := &cobra.Command{
		Use:   "append STREAM TYPE DATA",
		Short: "Append one event (DATA is a JSON object, - for stdin, or @FILE)",
		Example: `  hooklog events append order-123 payment.succeeded '{"amount": 1299}'
  hooklog events append order-123 order.created @order.json --expected-version no_stream`,
		Args: cobra.ExactArgs(3),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			data, err := readData(args[2], cmd.InOrStdin())
			if err != nil {
				return err
			}
			ev := map[string]any{"type": args[1], "data": data}
			if id != "" {
				ev["id"] = id
			}
			if tenant != "" {
				ev["tenant"] = tenant
			}
			if metadata != "" {
				md, err := readData(metadata, cmd.InOrStdin())
				if err != nil {
					return &ConfigError{Key: "--metadata", Problem: "is not valid JSON"}
				}
				ev["metadata"] = md
			}
			body := map[string]any{"events": []any{ev}}
			if expected != "" {
				if n, err := strconv.ParseInt(expected, 10, 64); err == nil {
					body["expected_version"] = n
				} else {
					body["expected_version"] = expected
				}
			}
			var res struct {
				Events []struct {
					ID       string `json:"id"`
					Position string `json:"position"`
					Version  int64  `json:"version"`
				} `json:"events"`
			}
			status, err := c.do(cmd.Context(), http.MethodPost, "/v1/streams/"+url.PathEscape(args[0])+"/events", nil, body, &res, 0)
			if err != nil {
				return err
			}
			for _, e := range res.Events {
				verb := "appended"
				if status == http.StatusOK {
					verb = "already in the log (nothing written)"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s: stream %s version %d position %s\n", verb, e.ID, args[0], e.Version, e.Position)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "event id (a UUID; retrying with the same id is idempotent); default: assigned by the server")
	f.StringVar(&tenant, "tenant", "", "tenant the event belongs to")
	f.StringVar(&expected, "expected-version", "", `optimistic concurrency: "any" (default), "no_stream", "exists" or the stream's last version`)
	f.StringVar(&metadata, "metadata", "", "metadata, a JSON object (or @FILE)")
	return cmd
}

// eventLine is the subset of an event tail prints.
type eventLine struct {
	ID         string          `json:"id"`
	Stream     string          `json:"stream"`
	Type       string          `json:"type"`
	Tenant     *string         `json:"tenant"`
	Data       json.RawMessage `json:"data"`
	Position   string          `json:"position"`
	Version    int64           `json:"version"`
	RecordedAt string          `json:"recorded_at"`
}

func newEventsTailCmd(cf *clientFlags) *cobra.Command {
	var (
		after, types, streams string
		wait                  time.Duration
		limit                 int
		asJSON, noFollow      bool
	)
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print events as they are appended (follows GET /v1/events with long-polls)",
		Long: `Print one line per event: recorded_at, position, stream@version, type, tenant, data.
With --json, print each event as one JSON object per line instead. Stops on Ctrl-C
(exit 0). Network errors are retried with backoff; an HTTP error (401, 403, 400)
stops with exit status 1.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			cursor := after
			if cursor == "start" {
				cursor = ""
			}
			backoff := 100 * time.Millisecond
			for {
				q := url.Values{}
				if cursor != "" {
					q.Set("after", cursor)
				}
				if types != "" {
					q.Set("types", types)
				}
				if streams != "" {
					q.Set("streams", streams)
				}
				q.Set("limit", strconv.Itoa(limit))
				if !noFollow {
					q.Set("wait", wait.String())
				}
				var page struct {
					Events []json.RawMessage `json:"events"`
					Next   string            `json:"next"`
				}
				_, err := c.do(ctx, http.MethodGet, "/v1/events", q, nil, &page, wait)
				if ctx.Err() != nil {
					return nil // interrupted: a clean stop
				}
				var ae *apiError
				if errors.As(err, &ae) && ae.Status < 500 {
					return err
				}
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "hooklog: %v; retrying in %s\n", err, backoff)
					select {
					case <-time.After(backoff):
					case <-ctx.Done():
						return nil
					}
					backoff = min(backoff*2, 10*time.Second)
					continue
				}
				backoff = 100 * time.Millisecond
				for _, raw := range page.Events {
					if asJSON {
						fmt.Fprintf(out, "%s\n", compactJSON(raw))
						continue
					}
					var e eventLine
					if err := json.Unmarshal(raw, &e); err != nil {
						return fmt.Errorf("unexpected event: %w", err)
					}
					tenant := "-"
					if e.Tenant != nil && *e.Tenant != "" {
						tenant = *e.Tenant
					}
					fmt.Fprintf(out, "%s %s %s@%d %s tenant=%s %s\n", e.RecordedAt, e.Position, e.Stream, e.Version, e.Type, tenant, compactJSON(e.Data))
				}
				moved := page.Next != "" && page.Next != cursor
				if page.Next != "" {
					cursor = page.Next
				}
				if noFollow && len(page.Events) == 0 && !moved {
					return nil // caught up
				}
			}
		}),
	}
	f := cmd.Flags()
	f.StringVar(&after, "after", "now", `start after this position cursor; "now" = only new events, "start" = from the beginning`)
	f.StringVar(&types, "types", "", "comma-separated event types, exact or with a trailing * (payment.*)")
	f.StringVar(&streams, "streams", "", "comma-separated streams, exact or with a trailing * (order-*)")
	f.DurationVar(&wait, "wait", 30*time.Second, "long-poll wait of each request")
	f.IntVar(&limit, "limit", 100, "events per request")
	f.BoolVar(&asJSON, "json", false, "print each event as one JSON line")
	f.BoolVar(&noFollow, "no-follow", false, "print what is there and exit instead of waiting for more")
	return cmd
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
