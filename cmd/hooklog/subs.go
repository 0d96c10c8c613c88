package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newSubsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "subs",
		Aliases: []string{"subscriptions"},
		Short:   "Manage webhook subscriptions on a running server",
	}
	cf.register(cmd)
	cmd.AddCommand(
		newSubsCreateCmd(&cf),
		newSubsListCmd(&cf),
		subsActionCmd(&cf, "show ID", "Show one subscription", http.MethodGet, ""),
		subsActionCmd(&cf, "pause ID", "Pause deliveries (events keep accumulating in the log)", http.MethodPost, "/pause"),
		subsActionCmd(&cf, "resume ID", "Resume deliveries from where they stopped", http.MethodPost, "/resume"),
		subsActionCmd(&cf, "delete ID", "Delete a subscription", http.MethodDelete, ""),
		subsActionCmd(&cf, "status ID", "Show the delivery status: cursor, lag, in flight, circuit, last success, dead letters", http.MethodGet, "/status"),
		newSubsDeliveriesCmd(&cf),
		subsActionCmd(&cf, "redrive ID", "Re-queue the subscription's dead letters (delivered again, same webhook-id)", http.MethodPost, "/redrive"),
	)
	return cmd
}

func newSubsCreateCmd(cf *clientFlags) *cobra.Command {
	var (
		description, tenant, start, maxAge string
		eventTypes, streams, schedule      []string
		headers                            []string
		ordered                            bool
		maxInFlight                        int
		rateLimit                          float64
	)
	cmd := &cobra.Command{
		Use:   "create URL",
		Short: "Create a subscription; prints it with its signing secret (shown only now)",
		Example: `  hooklog subs create https://example.com/hooks --event-types 'payment.*' --streams 'order-*'
  hooklog subs create https://example.com/hooks --tenant acme --start beginning --header X-Team=ops`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			f := cmd.Flags()
			body := map[string]any{"url": args[0]}
			if f.Changed("description") {
				body["description"] = description
			}
			if f.Changed("event-types") {
				body["event_types"] = eventTypes
			}
			if f.Changed("streams") {
				body["streams"] = streams
			}
			if f.Changed("tenant") {
				body["tenant"] = tenant
			}
			if f.Changed("start") {
				body["start"] = startSpec(start)
			}
			if f.Changed("retry-schedule") || f.Changed("max-age") {
				retry := map[string]any{}
				if f.Changed("retry-schedule") {
					retry["schedule"] = schedule
				}
				if f.Changed("max-age") {
					retry["max_age"] = maxAge
				}
				body["retry"] = retry
			}
			if f.Changed("ordered") {
				body["ordered"] = ordered
			}
			if f.Changed("max-in-flight") {
				body["max_in_flight"] = maxInFlight
			}
			if f.Changed("rate-limit") {
				body["rate_limit"] = rateLimit
			}
			if len(headers) > 0 {
				h := map[string]string{}
				for _, kv := range headers {
					k, v, ok := strings.Cut(kv, "=")
					if !ok {
						k, v, ok = strings.Cut(kv, ":")
					}
					if !ok || strings.TrimSpace(k) == "" {
						return &ConfigError{Key: "--header", Problem: fmt.Sprintf("%q is not NAME=VALUE", kv)}
					}
					h[strings.TrimSpace(k)] = strings.TrimSpace(v)
				}
				body["headers"] = h
			}
			var sub json.RawMessage
			if _, err := c.do(cmd.Context(), http.MethodPost, "/v1/subscriptions", nil, body, &sub, 0); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "created; keep the secret now, it is not shown again (rotate-secret makes a new one)")
			return printJSON(cmd.OutOrStdout(), sub)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&description, "description", "", "free text")
	f.StringSliceVar(&eventTypes, "event-types", nil, "event types to deliver, exact or with a trailing * (default: all)")
	f.StringSliceVar(&streams, "streams", nil, "streams to deliver from, exact or with a trailing * (default: all)")
	f.StringVar(&tenant, "tenant", "", "deliver only this tenant's events (a tenant key's subscriptions are always its own)")
	f.StringVar(&start, "start", "now", `where delivery starts: "now", "beginning", an RFC 3339 time, or a position cursor`)
	f.StringSliceVar(&schedule, "retry-schedule", nil, "retry delays, e.g. 5s,5m,30m,2h (default: the server's)")
	f.StringVar(&maxAge, "max-age", "", "give up (dead-letter) after this long, e.g. 72h")
	f.BoolVar(&ordered, "ordered", false, "deliver one at a time in log order")
	f.IntVar(&maxInFlight, "max-in-flight", 0, "concurrent deliveries when not ordered")
	f.Float64Var(&rateLimit, "rate-limit", 0, "deliveries per second, 0 = unlimited")
	f.StringArrayVar(&headers, "header", nil, "extra request header NAME=VALUE (repeatable)")
	return cmd
}

// startSpec turns --start into the API's start value.
func startSpec(s string) any {
	switch s {
	case "now", "beginning":
		return s
	}
	if _, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return map[string]string{"time": s}
	}
	return map[string]string{"after": s}
}

func newSubsListCmd(cf *clientFlags) *cobra.Command {
	return listCmd(cf, listSpec{
		use:     "list",
		short:   "List subscriptions",
		args:    cobra.NoArgs,
		path:    fixedPath("/v1/subscriptions"),
		columns: []string{"ID", "STATE", "TENANT", "EVENT TYPES", "STREAMS", "URL"},
		rows: itemRows(func(s map[string]any) []string {
			return []string{str(s["id"]), str(s["state"]), str(s["tenant"]), str(s["event_types"]), str(s["streams"]), str(s["url"])}
		}),
	})
}

// subsActionCmd is a command on one subscription: show, pause, resume, delete.
func subsActionCmd(cf *clientFlags, use, short, method, suffix string) *cobra.Command {
	verb := strings.Fields(use)[0]
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var out json.RawMessage
			if _, err := c.do(cmd.Context(), method, "/v1/subscriptions/"+url.PathEscape(args[0])+suffix, nil, nil, &out, 0); err != nil {
				return err
			}
			if len(out) > 0 && verb != "delete" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s subscription %s\n", map[string]string{"pause": "paused", "resume": "resumed", "delete": "deleted"}[verb], args[0])
			return nil
		}),
	}
}

func newSubsDeliveriesCmd(cf *clientFlags) *cobra.Command {
	var (
		status, eventID string
		limit           int
	)
	cmd := listCmd(cf, listSpec{
		use:   "deliveries ID",
		short: "List a subscription's delivery attempts, newest first",
		example: `  hooklog subs deliveries ID --status dead
  hooklog subs deliveries ID --event-id 0190c4a8-3c1e-7000-8000-000000000001`,
		args: cobra.ExactArgs(1),
		path: func(args []string) string { return "/v1/subscriptions/" + url.PathEscape(args[0]) + "/deliveries" },
		query: func() url.Values {
			q := url.Values{}
			if status != "" {
				q.Set("status", status)
			}
			if eventID != "" {
				q.Set("event_id", eventID)
			}
			if limit > 0 {
				q.Set("limit", fmt.Sprint(limit))
			}
			return q
		},
		columns: []string{"AT", "EVENT", "ATTEMPT", "STATUS", "CODE", "MS", "REPLAY", "ERROR"},
		rows: itemRows(func(a map[string]any) []string {
			ms := "-"
			if d, ok := a["duration_ms"].(float64); ok {
				ms = fmt.Sprintf("%.1f", d)
			}
			return []string{str(a["at"]), str(a["event_id"]), str(a["attempt"]), str(a["status"]),
				str(a["status_code"]), ms, str(a["replay_id"]), str(a["error"])}
		}),
	})
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "only succeeded, failed or dead attempts")
	f.StringVar(&eventID, "event-id", "", "only the attempts of this event")
	f.IntVar(&limit, "limit", 0, "at most this many (server default 100, at most 1000)")
	return cmd
}
