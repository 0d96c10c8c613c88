package main

import (
	"fmt"
	"net/http"
	"net/url"

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
	return listCmd(cf, listSpec{
		use:     "list",
		short:   "List API keys (never the keys themselves)",
		args:    cobra.NoArgs,
		path:    fixedPath("/v1/keys"),
		columns: []string{"ID", "NAME", "ROLE", "TENANT", "PREFIX", "CREATED"},
		rows: itemRows(func(k map[string]any) []string {
			return []string{str(k["id"]), str(k["name"]), str(k["role"]), str(k["tenant"]), str(k["prefix"]), str(k["created_at"])}
		}),
	})
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
