package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// Defaults of the client subcommands.
const (
	defaultServer = "http://127.0.0.1:8080"
	envServer     = "HOOKLOG_SERVER"
	envKey        = "HOOKLOG_KEY"
)

// clientFlags are --server and --key, shared by every client subcommand.
type clientFlags struct {
	server  string
	key     string
	timeout time.Duration
}

func (f *clientFlags) register(cmd *cobra.Command) {
	server := os.Getenv(envServer)
	if server == "" {
		server = defaultServer
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", server, "hooklog server URL (env "+envServer+")")
	pf.StringVar(&f.key, "key", os.Getenv(envKey), "API key (env "+envKey+")")
	pf.DurationVar(&f.timeout, "timeout", 30*time.Second, "timeout of one request (long-polls add their wait)")
}

func (f *clientFlags) client() (*client, error) {
	u, err := url.Parse(strings.TrimRight(f.server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &ConfigError{Key: "--server", Problem: fmt.Sprintf("%q is not an http(s) URL like %s", f.server, defaultServer)}
	}
	return &client{base: u, key: f.key, timeout: f.timeout, http: &http.Client{}}, nil
}

// client talks to a running hooklog server.
type client struct {
	base    *url.URL
	key     string
	timeout time.Duration
	http    *http.Client
}

// problem is an RFC 9457 problem document as the server sends it.
type problem struct {
	Type   string            `json:"type"`
	Title  string            `json:"title"`
	Status int               `json:"status"`
	Detail string            `json:"detail"`
	Errors map[string]string `json:"errors"`
}

// apiError is a non-2xx answer.
type apiError struct {
	Status  int
	Problem *problem // nil when the body was not problem+json
	Body    string
}

// Error is printed as is: a first line with the status and the problem, then
// one indented line per field error.
func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", e.Status, http.StatusText(e.Status))
	if p := e.Problem; p != nil {
		if p.Title != "" && !strings.EqualFold(p.Title, http.StatusText(e.Status)) {
			fmt.Fprintf(&b, ": %s", p.Title)
		}
		if p.Detail != "" {
			fmt.Fprintf(&b, ": %s", p.Detail)
		}
		fields := make([]string, 0, len(p.Errors))
		for f := range p.Errors {
			fields = append(fields, f)
		}
		sort.Strings(fields)
		for _, f := range fields {
			fmt.Fprintf(&b, "\n  %s: %s", f, p.Errors[f])
		}
	} else if body := strings.TrimSpace(e.Body); body != "" {
		if len(body) > 500 {
			body = body[:500] + "…"
		}
		fmt.Fprintf(&b, ": %s", body)
	}
	switch e.Status {
	case http.StatusUnauthorized:
		b.WriteString("\n  (pass an API key with --key or " + envKey + ")")
	}
	return b.String()
}

// do sends one request with a JSON body (nil for none) and decodes a 2xx
// JSON answer into out (nil to discard). It returns the status code.
func (c *client) do(ctx context.Context, method, path string, q url.Values, body, out any, extraTimeout time.Duration) (int, error) {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout+extraTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, err
		}
		return 0, fmt.Errorf("cannot reach %s: %w (is hooklog serve running? set --server or %s)", c.base, unwrapURLError(err), envServer)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &apiError{Status: resp.StatusCode, Body: string(raw)}
		var p problem
		if json.Unmarshal(raw, &p) == nil && (p.Title != "" || p.Detail != "" || p.Status != 0) {
			e.Problem = &p
		}
		return resp.StatusCode, e
	}
	if out != nil && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// listItems finds the array in a list answer: the answer itself, or the
// (first) array-valued field of an object such as {"subscriptions": [...]}.
func listItems(raw json.RawMessage) ([]map[string]any, error) {
	var items []map[string]any
	if err := json.Unmarshal(raw, &items); err == nil {
		return items, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("unexpected list answer: %w", err)
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if err := json.Unmarshal(obj[k], &items); err == nil && bytes.HasPrefix(bytes.TrimSpace(obj[k]), []byte("[")) {
			return items, nil
		}
	}
	return nil, errors.New("unexpected list answer: no array in it")
}

// str formats a JSON value for a table cell.
func str(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return x
	case []any:
		if len(x) == 0 {
			return "*"
		}
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = str(e)
		}
		return strings.Join(parts, ",")
	case float64:
		return fmt.Sprint(x)
	case bool:
		return fmt.Sprint(x)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// listSpec describes a command that GETs a list from the server and prints
// it as a table, or the server's JSON with --json.
type listSpec struct {
	use, short, example string
	args                cobra.PositionalArgs
	path                func(args []string) string
	query               func() url.Values // nil: none
	columns             []string
	rows                func(raw json.RawMessage) ([][]string, error)
}

// listCmd builds the command of s; callers add their own filter flags.
func listCmd(cf *clientFlags, s listSpec) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     s.use,
		Short:   s.short,
		Example: s.example,
		Args:    s.args,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var q url.Values
			if s.query != nil {
				q = s.query()
			}
			var raw json.RawMessage
			if _, err := c.do(cmd.Context(), http.MethodGet, s.path(args), q, nil, &raw, 0); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			rows, err := s.rows(raw)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, strings.Join(s.columns, "\t"))
			for _, r := range rows {
				fmt.Fprintln(tw, strings.Join(r, "\t"))
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's JSON")
	return cmd
}

// itemRows turns a list answer (see listItems) into table rows, one per item.
func itemRows(cells func(item map[string]any) []string) func(json.RawMessage) ([][]string, error) {
	return func(raw json.RawMessage) ([][]string, error) {
		items, err := listItems(raw)
		if err != nil {
			return nil, err
		}
		rows := make([][]string, len(items))
		for i, it := range items {
			rows[i] = cells(it)
		}
		return rows, nil
	}
}

// fixedPath is a listSpec path that does not depend on the arguments.
func fixedPath(p string) func([]string) string { return func([]string) string { return p } }
