package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Validate the configuration and print the effective values",
		Long: `Read the configuration exactly as "hooklog serve" would (same flags, file and
HOOKLOG_* environment), validate it, and print every key with its effective value.
Secrets are not printed. Exits 2 with one line naming the key when it is invalid.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if cfg.File != "" {
				fmt.Fprintf(out, "# file: %s\n", cfg.File)
			} else {
				fmt.Fprintln(out, "# file: none")
			}
			for _, kv := range cfg.effective() {
				fmt.Fprintf(out, "%s: %s\n", kv[0], kv[1])
			}
			return nil
		}),
	}
	addConfigFlags(cmd.Flags())
	return cmd
}

// effective lists every key with its value as "key", "value" pairs, in the
// order of keys, with secrets masked.
func (c *config) effective() [][2]string {
	secret := func(s string) string {
		if s == "" {
			return `""`
		}
		return "(set)"
	}
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	vals := map[string]string{
		"log.level":                        c.Log.Level,
		"log.format":                       c.Log.Format,
		"http.addr":                        q(c.HTTP.Addr),
		"http.max_body":                    fmt.Sprint(c.HTTP.MaxBody),
		"http.read_header_timeout":         c.HTTP.ReadHeaderTimeout.String(),
		"http.shutdown_timeout":            c.HTTP.ShutdownTimeout.String(),
		"store.driver":                     c.Store.Driver,
		"store.path":                       q(c.Store.Path),
		"store.postgres.url":               q(redactURL(c.Store.Postgres.URL)),
		"store.postgres.schema":            c.Store.Postgres.Schema,
		"store.postgres.max_conns":         fmt.Sprint(c.Store.Postgres.MaxConns),
		"store.postgres.append_groups":     fmt.Sprint(c.Store.Postgres.AppendGroups),
		"store.esdb.url":                   q(redactURL(c.Store.ESDB.URL)),
		"auth.admin_key":                   secret(c.Auth.AdminKey),
		"delivery.allow_private_networks":  fmt.Sprint(c.Delivery.AllowPrivateNetworks),
		"delivery.timeout":                 c.Delivery.Timeout.String(),
		"delivery.max_idle_conns_per_host": fmt.Sprint(c.Delivery.MaxIdleConnsPerHost),
		"delivery.attempt_retention":       c.Delivery.AttemptRetention.String(),
		"delivery.circuit_failures":        fmt.Sprint(c.Delivery.CircuitFailures),
		"delivery.circuit_cooldown":        c.Delivery.CircuitCooldown.String(),
		"delivery.drain_timeout":           c.Delivery.DrainTimeout.String(),
		"replay.max_window":                c.Replay.MaxWindow.String(),
	}
	out := make([][2]string, 0, len(keys))
	for _, k := range keys {
		v, ok := vals[k.key]
		if !ok {
			panic("config.effective: key without a value: " + k.key) // caught by tests
		}
		out = append(out, [2]string{k.key, v})
	}
	return out
}
