package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newKeysCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage API keys on a running server (admin key required)",
	}
	cf.register(cmd)
	cmd.AddCommand(newKeysCreateCmd(&cf), newKeysListCmd(&cf), newKeysRevokeCmd(&cf))
	return cmd
}

func newKeysCreateCmd(cf *clientFlags) *cobra.Command {
	var role, tenant string
	cmd := &cobra.Command{
		Use:   "create NAME --role admin|producer|tenant [--tenant T]",
		Short: "Create an API key; prints the key (shown only now)",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0], "role": role}
			if tenant != "" {
				body["tenant"] = tenant
			}
			var k map[string]any
			if _, err := c.do(cmd.Context(), http.MethodPost, "/v1/keys", nil, body, &k, 0); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "created; keep the key now, it is not shown again")
			return printJSON(cmd.OutOrStdout(), k)
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, producer or tenant (required)")
	cmd.Flags().StringVar(&tenant, "tenant", "", "the tenant of a tenant key")
	_ = cmd.MarkFlagRequired("role")
	return cmd
}

func newKeysListCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List API keys (never the keys themselves)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if _, err := c.do(cmd.Context(), http.MethodGet, "/v1/keys", nil, nil, &raw, 0); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			items, err := listItems(raw)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tTENANT\tPREFIX\tCREATED")
			for _, k := range items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", str(k["id"]), str(k["name"]), str(k["role"]), str(k["tenant"]), str(k["prefix"]), str(k["created_at"]))
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's JSON")
	return cmd
}

func newKeysRevokeCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if _, err := c.do(cmd.Context(), http.MethodDelete, "/v1/keys/"+url.PathEscape(args[0]), nil, nil, nil, 0); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked key %s\n", args[0])
			return nil
		}),
	}
}
