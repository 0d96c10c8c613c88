package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/hooklog/hooklog/projector"
)

// flags returns a parsed flag set as serve would have it.
func flags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	addConfigFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return fs
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(flags(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != "127.0.0.1:8080" || c.HTTP.MaxBody != 1<<20 || c.Store.Driver != "embedded" ||
		c.Store.Path != "./data" || c.Store.Postgres.Schema != "hooklog" || c.Delivery.AllowPrivateNetworks ||
		c.Delivery.Timeout != 15*time.Second || c.Auth.AdminKey != "" || c.Dev {
		t.Fatalf("defaults: %+v", c)
	}
	if d := defaultConfig(); *d != *c {
		t.Fatalf("defaultConfig() %+v differs from loading nothing %+v", *d, *c)
	}
	// The delivery defaults are the projector's own.
	pc := projectorConfig(c, nil)
	if pc.Delivery.MaxIdleConnsPerHost != projector.DefaultIdleConnsPerHost || pc.AttemptRetention != projector.DefaultAttemptRetention ||
		pc.CircuitFailures != projector.DefaultCircuitFailures || pc.CircuitCooldown != projector.DefaultCircuitCooldown ||
		pc.Delivery.Timeout != projector.DefaultDeliveryTimeout || c.Delivery.DrainTimeout != defaultDrainTimeout {
		t.Fatalf("delivery defaults differ from the projector's: %+v, drain %s", pc, c.Delivery.DrainTimeout)
	}
}

// store.driver=esdb needs both connection strings; with them it validates.
func TestConfigESDB(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(flags(t, "--store.driver", "esdb", "--store.esdb.url", "esdb://127.0.0.1:2113?tls=false",
		"--store.postgres.url", "postgres://postgres@127.0.0.1:5432/test", "--store.postgres.schema", "hooklog_esdb"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Driver != "esdb" || c.Store.ESDB.URL != "esdb://127.0.0.1:2113?tls=false" || c.Store.Postgres.Schema != "hooklog_esdb" {
		t.Fatalf("esdb config: %+v", c.Store)
	}
}

// The precedence is defaults < file < HOOKLOG_* env < flags, for top-level and
// nested keys alike. Not parallel: it sets environment variables.
func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, "hooklog.yaml", `
http:
  addr: 127.0.0.1:1001
store:
  postgres:
    url: postgres://file@127.0.0.1/db
    schema: fromfile
delivery:
  timeout: 1s
  allow_private_networks: true
`)
	t.Setenv("HOOKLOG_STORE_POSTGRES_URL", "postgres://env@127.0.0.1/db")
	t.Setenv("HOOKLOG_DELIVERY_TIMEOUT", "2s")
	t.Setenv("HOOKLOG_LOG_LEVEL", "debug")

	c, err := loadConfig(flags(t, "--config", file, "--delivery.timeout", "3s"))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ key, got, want string }{
		{"http.addr (file over default)", c.HTTP.Addr, "127.0.0.1:1001"},
		{"store.postgres.schema (file over default)", c.Store.Postgres.Schema, "fromfile"},
		{"store.postgres.url (env over file, nested)", c.Store.Postgres.URL, "postgres://env@127.0.0.1/db"},
		{"log.level (env over default)", c.Log.Level, "debug"},
		{"delivery.timeout (flag over env over file)", c.Delivery.Timeout.String(), "3s"},
		{"store.path (default)", c.Store.Path, "./data"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.key, ch.got, ch.want)
		}
	}
	if !c.Delivery.AllowPrivateNetworks {
		t.Error("delivery.allow_private_networks from the file was lost")
	}

	// An explicit false flag beats a true from the file.
	c, err = loadConfig(flags(t, "--config", file, "--delivery.allow_private_networks=false"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Delivery.AllowPrivateNetworks {
		t.Error("--delivery.allow_private_networks=false did not override the file")
	}

	// Without the flag, the environment wins over the file.
	c, err = loadConfig(flags(t, "--config", file))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Delivery.Timeout; got != 2*time.Second {
		t.Errorf("delivery.timeout = %s, want the env's 2s", got)
	}
}

// --dev overrides file and environment for its four keys; explicit flags still win.
func TestConfigDev(t *testing.T) {
	file := writeFile(t, "hooklog.yaml", "store:\n  driver: postgres\n  postgres:\n    url: postgres://x@127.0.0.1/db\n")
	t.Setenv("HOOKLOG_DELIVERY_ALLOW_PRIVATE_NETWORKS", "false")
	t.Setenv("HOOKLOG_HTTP_ADDR", "127.0.0.1:1234")
	c, err := loadConfig(flags(t, "--config", file, "--dev", "--store.path", "/tmp/x"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Dev || c.Store.Driver != "embedded" || c.HTTP.Addr != "127.0.0.1:8080" ||
		!c.Delivery.AllowPrivateNetworks || c.Store.Path != "/tmp/x" {
		t.Fatalf("dev config: dev=%v driver=%s addr=%s private=%v path=%s",
			c.Dev, c.Store.Driver, c.HTTP.Addr, c.Delivery.AllowPrivateNetworks, c.Store.Path)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		args    []string
		file    string
		key     string
		problem string // regexp
	}{
		{"unknown driver", []string{"--store.driver", "mysql"}, "", "store.driver", `unknown driver "mysql"`},
		{"esdb without url", []string{"--store.driver", "esdb", "--store.postgres.url", "postgres://h/db"}, "", "store.esdb.url", `required for store.driver=esdb`},
		{"esdb bad url", []string{"--store.driver", "esdb", "--store.esdb.url", "esdb://u:hunter2@h:port?tls=false", "--store.postgres.url", "postgres://h/db"}, "", "store.esdb.url", `cannot be parsed`},
		{"esdb wrong scheme", []string{"--store.driver", "esdb", "--store.esdb.url", "http://h:2113", "--store.postgres.url", "postgres://h/db"}, "", "store.esdb.url", `esdb://`},
		{"esdb without postgres url", []string{"--store.driver", "esdb", "--store.esdb.url", "esdb://127.0.0.1:2113?tls=false"}, "", "store.postgres.url", `required for store.driver=esdb, which keeps its side state there`},
		{"esdb bad postgres url", []string{"--store.driver", "esdb", "--store.esdb.url", "esdb://127.0.0.1:2113?tls=false", "--store.postgres.url", "postgres://u:hunter2@h:port/db"}, "", "store.postgres.url", `cannot be parsed`},
		{"zero idle conns", []string{"--delivery.max_idle_conns_per_host", "0"}, "", "delivery.max_idle_conns_per_host", `at least 1`},
		{"zero circuit failures", []string{"--delivery.circuit_failures", "0"}, "", "delivery.circuit_failures", `at least 1`},
		{"negative circuit failures", []string{"--delivery.circuit_failures", "-3"}, "", "delivery.circuit_failures", `non-negative integer`},
		{"malformed retention", []string{"--delivery.attempt_retention", "7d"}, "", "delivery.attempt_retention", `positive duration`},
		{"zero drain timeout", []string{"--delivery.drain_timeout", "0s"}, "", "delivery.drain_timeout", `positive duration`},
		{"postgres without url", []string{"--store.driver", "postgres"}, "", "store.postgres.url", `required`},
		{"postgres bad url", []string{"--store.driver", "postgres", "--store.postgres.url", "postgres://u:hunter2@h:port/db"}, "", "store.postgres.url", `cannot be parsed`},
		{"bad schema", []string{"--store.driver", "postgres", "--store.postgres.url", "postgres://h/db", "--store.postgres.schema", "Drop Table"}, "", "store.postgres.schema", `identifier`},
		{"malformed duration flag", []string{"--delivery.timeout", "15"}, "", "delivery.timeout", `"15" is not a positive duration`},
		{"negative duration", []string{"--http.shutdown_timeout", "-1s"}, "", "http.shutdown_timeout", `positive duration`},
		{"malformed duration in file", nil, "delivery:\n  timeout: soon\n", "delivery.timeout", `"soon"`},
		{"bad size", []string{"--http.max_body", "1 potato"}, "", "http.max_body", `not a size`},
		{"bad bool in file", nil, "delivery:\n  allow_private_networks: maybe\n", "delivery.allow_private_networks", `not a boolean`},
		{"bad addr", []string{"--http.addr", "localhost"}, "", "http.addr", `host:port`},
		{"bad log level", []string{"--log.level", "loud"}, "", "log.level", `unknown level`},
		{"unknown key in file", nil, "http:\n  adress: 127.0.0.1:1\n", "http.adress", `unknown key`},
		{"list for a scalar", nil, "store:\n  path: [a, b]\n", "store.path", `single value`},
		{"yaml syntax", nil, "http: [\n", "config", `yaml`},
		{"missing config file", []string{"--config", "/nonexistent/hooklog.yaml"}, "", "config", `cannot read`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := tc.args
			if tc.file != "" {
				args = append(args, "--config", writeFile(t, "c.yaml", tc.file))
			}
			_, err := loadConfig(flags(t, args...))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConfigError", err)
			}
			if ce.Key != tc.key || !regexp.MustCompile(tc.problem).MatchString(ce.Problem) {
				t.Fatalf("got %q, want key %s and a problem matching %s", ce.Error(), tc.key, tc.problem)
			}
			if strings.Contains(ce.Error(), "\n") || strings.Contains(ce.Error(), "hunter2") {
				t.Fatalf("error must be one line without secrets: %q", ce.Error())
			}
		})
	}
}

// configs/hooklog.yaml documents exactly the keys hooklog knows, each with its
// built-in default: loading it changes nothing.
func TestConfigFileDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	const file = "../../configs/hooklog.yaml"
	fv := viper.New()
	fv.SetConfigFile(file)
	if err := fv.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	inFile := map[string]bool{}
	for _, k := range fv.AllKeys() {
		inFile[k] = true
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !inFile[k.key] {
			t.Errorf("%s does not document %s", file, k.key)
		}
		// Each key is preceded by a comment line explaining it.
		leaf := k.key[strings.LastIndex(k.key, ".")+1:]
		if !regexp.MustCompile(`#[^\n]*\n\s*` + regexp.QuoteMeta(leaf) + `:`).Match(raw) {
			t.Errorf("%s: key %s has no comment directly above it", file, k.key)
		}
	}
	fromFile, err := loadConfig(flags(t, "--config", file))
	if err != nil {
		t.Fatal(err)
	}
	defaults, err := loadConfig(flags(t))
	if err != nil {
		t.Fatal(err)
	}
	fromFile.File = ""
	if *fromFile != *defaults {
		t.Errorf("%s differs from the built-in defaults:\n file:     %+v\n defaults: %+v", file, *fromFile, *defaults)
	}
}

// The README's configuration table lists every key with its environment variable.
func TestReadmeDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		env := envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(k.key, ".", "_"))
		row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(k.key) + "` \\| `" + env + "` \\|")
		if !row.Match(raw) {
			t.Errorf("README.md has no configuration table row for %s / %s", k.key, env)
		}
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"1": 1, "1048576": 1 << 20, "1MiB": 1 << 20, "512KiB": 512 << 10, "1MB": 1e6, "2GiB": 2 << 30, "10B": 10} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "1.5MiB", "1 TiB", "MiB", "99999999999999999999"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
}

// store.postgres.append_groups 0 turns group commit off; postgres.Config
// reads 0 as its default, so it must get a negative value.
func TestAppendGroupsOff(t *testing.T) {
	for in, want := range map[int]int{0: -1, 1: 1, 2: 2, 8: 8} {
		if got := appendGroups(in); got != want {
			t.Errorf("append_groups %d: postgres.Config.AppendGroups %d, want %d", in, got, want)
		}
	}
}
