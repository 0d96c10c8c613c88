package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func newReplayCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "replay",
		Aliases: []string{"replays"},
		Short:   "Replay a time window of the log to subscriptions on a running server",
		Long: `A replay delivers again every event recorded in [from, to) to each named
subscription whose filters match, in log order, marked with webhook-replay and
with the event's own webhook-id. Live deliveries go first; a replay uses the
spare capacity of each subscription's in-flight window and rate limit.`,
	}
	cf.register(cmd)
	cmd.AddCommand(newReplayCreateCmd(&cf), newReplayListCmd(&cf), newReplayShowCmd(&cf), newReplayCancelCmd(&cf))
	return cmd
}

// replayDoc is the fields of a replay the CLI reads.
type replayDoc struct {
	ID             string   `json:"id"`
	Status         string   `json:"status"`
	Subscriptions  []string `json:"subscriptions"`
	From           string   `json:"from"`
	To             string   `json:"to"`
	Total          int64    `json:"total"`
	TotalEstimated bool     `json:"total_estimated"`
	Delivered      int64    `json:"delivered"`
	Failed         int64    `json:"failed"`
	Error          *string  `json:"error"`
	CreatedAt      string   `json:"created_at"`
	FinishedAt     *string  `json:"finished_at"`
}

// parseReplayTime accepts an RFC 3339 time, "now", or a duration before now
// ("2h" = two hours ago).
func parseReplayTime(flag, v string, now time.Time) (string, error) {
	switch {
	case v == "":
		return "", &ConfigError{Key: flag, Problem: "is required (an RFC 3339 time, now, or a duration ago like 2h)"}
	case v == "now":
		return now.UTC().Format(time.RFC3339Nano), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.Format(time.RFC3339Nano), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d).UTC().Format(time.RFC3339Nano), nil
	}
	return "", &ConfigError{Key: flag, Problem: fmt.Sprintf("%q is not an RFC 3339 time (2026-11-01T00:00:00Z), now, or a duration ago (2h)", v)}
}

func newReplayCreateCmd(cf *clientFlags) *cobra.Command {
	var (
		subs       []string
		all        bool
		from, to   string
		eventTypes []string
		follow     bool
		interval   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create (--subscription ID ... | --all) --from T --to T",
		Short: "Start a replay; with --follow, show its progress until it ends",
		Example: `  hooklog replay create --subscription 0191... --from 2026-11-01T00:00:00Z --to 2026-11-02T00:00:00Z
  hooklog replay create --all --from 2h --to now --types 'payment.*' --follow`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if all == (len(subs) > 0) {
				return &ConfigError{Key: "--subscription", Problem: "give --subscription ID (repeatable) or --all, not both"}
			}
			now := time.Now()
			fromV, err := parseReplayTime("--from", from, now)
			if err != nil {
				return err
			}
			toV, err := parseReplayTime("--to", to, now)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			body := map[string]any{"from": fromV, "to": toV}
			if all {
				body["subscriptions"] = "all"
			} else {
				body["subscriptions"] = subs
			}
			if len(eventTypes) > 0 {
				body["event_types"] = eventTypes
			}
			var raw json.RawMessage
			if _, err := c.do(cmd.Context(), http.MethodPost, "/v1/replays", nil, body, &raw, 0); err != nil {
				return err
			}
			if !follow {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var r replayDoc
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("unexpected answer: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "replay %s started (%s to %s, %d subscription(s)); interrupting only stops watching: hooklog replay cancel %s stops it\n",
				r.ID, r.From, r.To, len(r.Subscriptions), r.ID)
			return followReplay(cmd.Context(), c, r, interval, cmd.OutOrStdout(), cmd.ErrOrStderr())
		}),
	}
	f := cmd.Flags()
	f.StringSliceVar(&subs, "subscription", nil, "subscription id to replay to (repeatable, or comma-separated)")
	f.BoolVar(&all, "all", false, "replay to every active subscription the key may see")
	f.StringVar(&from, "from", "", "window start (inclusive): RFC 3339, now, or a duration ago (2h)")
	f.StringVar(&to, "to", "", "window end (exclusive): RFC 3339, now, or a duration ago")
	f.StringSliceVar(&eventTypes, "types", nil, "only these event types, exact or with a trailing * (default: all)")
	f.BoolVar(&follow, "follow", false, "show a live progress bar (rate, ETA) until the replay ends")
	f.DurationVar(&interval, "interval", 250*time.Millisecond, "with --follow: how often to ask for progress")
	return cmd
}

// followReplay polls the replay and draws a progress bar on w until it ends;
// it fails when the replay ends other than completed.
func followReplay(ctx context.Context, c *client, r replayDoc, interval time.Duration, out, w io.Writer) error {
	bar := progressbar.NewOptions64(max(r.Total, 1),
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("replay"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("deliveries"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	total := r.Total
	describe := func(r replayDoc) {
		d := "replay"
		if r.TotalEstimated {
			d = "replay (total estimated)"
		}
		if r.Failed > 0 {
			d += fmt.Sprintf(" %d failed", r.Failed)
		}
		bar.Describe(d)
	}
	describe(r)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for r.Status == "running" {
		select {
		case <-ctx.Done():
			_ = bar.Exit()
			return ctx.Err()
		case <-tick.C:
		}
		var next replayDoc
		if _, err := c.do(ctx, http.MethodGet, "/v1/replays/"+url.PathEscape(r.ID), nil, nil, &next, 0); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Status < 500 {
				_ = bar.Exit()
				return err
			}
			continue // the server may be restarting: keep watching
		}
		r = next
		if r.Total != total && r.Total > 0 {
			total = r.Total
			bar.ChangeMax64(total)
		}
		describe(r)
		_ = bar.Set64(min(r.Delivered+r.Failed, max(total, 1)))
	}
	if r.Status == "completed" {
		if total := max(r.Total, r.Delivered+r.Failed, 1); total != bar.GetMax64() {
			bar.ChangeMax64(total)
		}
		_ = bar.Finish()
	} else {
		_ = bar.Exit()
		fmt.Fprintln(w)
	}
	fmt.Fprintf(out, "replay %s %s: %d delivered, %d failed of %d\n", r.ID, r.Status, r.Delivered, r.Failed, r.Total)
	switch r.Status {
	case "completed":
		return nil
	case "failed":
		reason := "unknown reason"
		if r.Error != nil {
			reason = *r.Error
		}
		return fmt.Errorf("replay %s failed: %s", r.ID, reason)
	}
	return fmt.Errorf("replay %s was %s", r.ID, r.Status)
}

func newReplayListCmd(cf *clientFlags) *cobra.Command {
	return listCmd(cf, listSpec{
		use:     "list",
		short:   "List replays, newest first",
		args:    cobra.NoArgs,
		path:    fixedPath("/v1/replays"),
		columns: []string{"ID", "STATUS", "DELIVERED", "FAILED", "TOTAL", "FROM", "TO", "SUBSCRIPTIONS"},
		rows: func(raw json.RawMessage) ([][]string, error) {
			var list struct {
				Replays []replayDoc `json:"replays"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return nil, fmt.Errorf("unexpected answer: %w", err)
			}
			rows := make([][]string, len(list.Replays))
			for i, r := range list.Replays {
				total := fmt.Sprint(r.Total)
				if r.TotalEstimated {
					total = "~" + total
				}
				rows[i] = []string{r.ID, r.Status, fmt.Sprint(r.Delivered), fmt.Sprint(r.Failed), total, r.From, r.To, strings.Join(r.Subscriptions, ",")}
			}
			return rows, nil
		},
	})
}

func newReplayShowCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a replay and its progress",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if _, err := c.do(cmd.Context(), http.MethodGet, "/v1/replays/"+url.PathEscape(args[0]), nil, nil, &raw, 0); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), raw)
		}),
	}
}

func newReplayCancelCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a running replay (its deliveries stop within a second)",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if _, err := c.do(cmd.Context(), http.MethodPost, "/v1/replays/"+url.PathEscape(args[0])+"/cancel", nil, nil, &raw, 0); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), raw)
		}),
	}
}
