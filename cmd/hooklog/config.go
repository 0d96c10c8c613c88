package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	kdb "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// defaultConfigFile is read when it exists and --config is not given.
const defaultConfigFile = "configs/hooklog.yaml"

// envPrefix prefixes every environment variable: http.addr is HOOKLOG_HTTP_ADDR.
const envPrefix = "HOOKLOG"

// kind says how a key's value is parsed and validated.
type kind int

const (
	kindString kind = iota
	kindBool
	kindDuration // Go duration string, > 0
	kindSize     // bytes: an integer or "512KiB", "1MiB", "1MB", > 0
	kindInt      // integer >= 0
)

// keySpec is one configuration key. keys is the single list every layer
// (defaults, file, environment, flags), the validation and the documentation
// test are driven from.
type keySpec struct {
	key   string
	def   string
	kind  kind
	usage string
}

var keys = []keySpec{
	{"log.level", "info", kindString, "log level: debug, info, warn or error"},
	{"log.format", "text", kindString, "log format: text or json"},
	{"http.addr", "127.0.0.1:8080", kindString, "host:port the HTTP API listens on"},
	{"http.max_body", "1MiB", kindSize, "largest accepted request body; larger gets 413"},
	{"http.read_header_timeout", "10s", kindDuration, "time allowed to read request headers"},
	{"http.shutdown_timeout", "30s", kindDuration, "on SIGTERM/SIGINT, how long in-flight requests may finish"},
	{"store.driver", "embedded", kindString, "event store backend: embedded, postgres or esdb"},
	{"store.path", "./data", kindString, "directory of the embedded store"},
	{"store.postgres.url", "", kindString, "PostgreSQL connection URL (required for store.driver=postgres and esdb)"},
	{"store.postgres.schema", "hooklog", kindString, "PostgreSQL schema holding hooklog's tables"},
	{"store.postgres.max_conns", "0", kindInt, "PostgreSQL pool size; 0 = the driver's default"},
	{"store.postgres.append_groups", "2", kindInt, "group commit: single-event appends share at most this many statements at once; 0 = off, every append its own transaction"},
	{"store.esdb.url", "", kindString, "KurrentDB/EventStoreDB connection string (store.driver=esdb)"},
	{"auth.admin_key", "", kindString, "admin API key; empty = generate one on first start and print it"},
	{"delivery.allow_private_networks", "false", kindBool, "allow webhook targets on loopback/private networks"},
	{"delivery.timeout", "15s", kindDuration, "time an endpoint has to answer a delivery"},
	{"delivery.max_idle_conns_per_host", "1000", kindInt, "kept-alive connections per endpoint host (>= 1)"},
	{"delivery.attempt_retention", "168h", kindDuration, "how long attempt records stay in the deliveries index"},
	{"delivery.circuit_failures", "5", kindInt, "consecutive failed attempts that open a route's circuit (>= 1)"},
	{"delivery.circuit_cooldown", "5s", kindDuration, "first wait of an open circuit before a probe; doubles up to 5m"},
	{"delivery.drain_timeout", "10s", kindDuration, "on SIGTERM/SIGINT, how long deliveries in flight may finish"},
	{"replay.max_window", "720h", kindDuration, "longest time window (to - from) one replay may cover"},
}

// devValues are what --dev sets: they override the file and the environment,
// but a flag given explicitly still wins.
var devValues = map[string]any{
	"store.driver":                    "embedded",
	"store.path":                      "./data",
	"http.addr":                       "127.0.0.1:8080",
	"delivery.allow_private_networks": true,
}

// config is the validated configuration.
type config struct {
	Log struct {
		Level  string
		Format string
	}
	HTTP struct {
		Addr              string
		MaxBody           int64
		ReadHeaderTimeout time.Duration
		ShutdownTimeout   time.Duration
	}
	Store struct {
		Driver   string
		Path     string
		Postgres struct {
			URL          string
			Schema       string
			MaxConns     int32
			AppendGroups int
		}
		ESDB struct {
			URL string
		}
	}
	Auth struct {
		AdminKey string
	}
	Delivery struct {
		AllowPrivateNetworks bool
		Timeout              time.Duration
		MaxIdleConnsPerHost  int
		AttemptRetention     time.Duration
		CircuitFailures      int
		CircuitCooldown      time.Duration
		DrainTimeout         time.Duration
	}
	Replay struct{ MaxWindow time.Duration }
	Dev    bool
	// File is the configuration file that was read, "" if none.
	File string
}

// ConfigError is a configuration problem: it names the key (or file) and the
// problem. The process exits with status 2 on one.
type ConfigError struct {
	Key     string
	Problem string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Problem }

func cfgErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Problem: fmt.Sprintf(format, args...)}
}

// addConfigFlags registers --config, --dev and one flag per key (named after
// the key, e.g. --http.addr) on fs.
func addConfigFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "configuration file (default "+defaultConfigFile+" when it exists)")
	fs.Bool("dev", false, "development mode: embedded store in ./data, 127.0.0.1:8080, private delivery targets allowed")
	for _, k := range keys {
		if k.kind == kindBool {
			fs.Bool(k.key, k.def == "true", k.usage)
			continue
		}
		fs.String(k.key, k.def, k.usage)
	}
}

// loadConfig reads the configuration in order of precedence: defaults <
// config file < HOOKLOG_* environment < --dev < explicit flags, and validates it.
// Every error is a *ConfigError.
func loadConfig(fs *pflag.FlagSet) (*config, error) {
	v := viper.New()
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for _, k := range keys {
		v.SetDefault(k.key, k.def)
		// AutomaticEnv alone misses nested keys in Unmarshal/AllSettings;
		// binding each key makes HOOKLOG_STORE_POSTGRES_URL work everywhere.
		if err := v.BindEnv(k.key); err != nil {
			return nil, cfgErr(k.key, "%v", err)
		}
		if f := fs.Lookup(k.key); f != nil {
			if err := v.BindPFlag(k.key, f); err != nil {
				return nil, cfgErr(k.key, "%v", err)
			}
		}
	}

	file, explicit := "", false
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		file, explicit = f.Value.String(), true
	} else if _, err := os.Stat(defaultConfigFile); err == nil {
		file = defaultConfigFile
	}
	if file != "" {
		if err := mergeFile(v, file, explicit); err != nil {
			return nil, err
		}
	}

	dev := false
	if f := fs.Lookup("dev"); f != nil {
		dev, _ = strconv.ParseBool(f.Value.String())
	}
	if dev {
		for key, val := range devValues {
			if f := fs.Lookup(key); f == nil || !f.Changed {
				v.Set(key, val)
			}
		}
	}

	c, err := decode(v)
	if err != nil {
		return nil, err
	}
	c.Dev = dev
	c.File = file
	return c, c.validate()
}

// defaultConfig is the configuration of built-in defaults alone (no file,
// environment or flags): what the benchmarks run with.
func defaultConfig() *config {
	v := viper.New()
	for _, k := range keys {
		v.SetDefault(k.key, k.def)
	}
	c, err := decode(v)
	if err != nil {
		panic("hooklog: the built-in defaults do not decode: " + err.Error()) // caught by tests
	}
	return c
}

// mergeFile reads a YAML file into v's config layer, rejecting keys hooklog
// does not know (a typo would otherwise be silently ignored).
func mergeFile(v *viper.Viper, file string, explicit bool) error {
	if _, err := os.Stat(file); err != nil {
		if explicit {
			return cfgErr("config", "cannot read %s: %v", file, errors.Unwrap(err))
		}
		return nil
	}
	fv := viper.New()
	fv.SetConfigFile(file)
	fv.SetConfigType("yaml")
	if err := fv.ReadInConfig(); err != nil {
		return cfgErr("config", "%s: %s", file, oneLine(err.Error()))
	}
	known := make(map[string]bool, len(keys))
	for _, k := range keys {
		known[k.key] = true
	}
	fileKeys := fv.AllKeys()
	slices.Sort(fileKeys)
	for _, k := range fileKeys {
		if !known[k] {
			return cfgErr(k, "unknown key in %s", file)
		}
	}
	return v.MergeConfigMap(fv.AllSettings())
}

// decode parses every key strictly: viper's own getters turn a malformed
// duration into 0, which would hide the mistake.
func decode(v *viper.Viper) (*config, error) {
	var c config
	vals := map[string]any{}
	for _, k := range keys {
		raw := v.Get(k.key)
		switch raw.(type) {
		case map[string]any, []any, []string:
			return nil, cfgErr(k.key, "must be a single value, not a list or map")
		}
		s := strings.TrimSpace(fmt.Sprint(raw))
		if raw == nil {
			s = ""
		}
		switch k.kind {
		case kindString:
			vals[k.key] = s
		case kindBool:
			b, err := strconv.ParseBool(s)
			if err != nil {
				return nil, cfgErr(k.key, "%q is not a boolean (want true or false)", s)
			}
			vals[k.key] = b
		case kindDuration:
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return nil, cfgErr(k.key, "%q is not a positive duration (want e.g. \"15s\", \"500ms\", \"5m\")", s)
			}
			vals[k.key] = d
		case kindSize:
			n, err := parseSize(s)
			if err != nil {
				return nil, cfgErr(k.key, "%v", err)
			}
			vals[k.key] = n
		case kindInt:
			n, err := strconv.ParseInt(s, 10, 32)
			if err != nil || n < 0 {
				return nil, cfgErr(k.key, "%q is not a non-negative integer", s)
			}
			vals[k.key] = n
		}
	}
	str := func(k string) string { return vals[k].(string) }
	dur := func(k string) time.Duration { return vals[k].(time.Duration) }
	c.Log.Level = str("log.level")
	c.Log.Format = str("log.format")
	c.HTTP.Addr = str("http.addr")
	c.HTTP.MaxBody = vals["http.max_body"].(int64)
	c.HTTP.ReadHeaderTimeout = dur("http.read_header_timeout")
	c.HTTP.ShutdownTimeout = dur("http.shutdown_timeout")
	c.Store.Driver = str("store.driver")
	c.Store.Path = str("store.path")
	c.Store.Postgres.URL = str("store.postgres.url")
	c.Store.Postgres.Schema = str("store.postgres.schema")
	c.Store.Postgres.MaxConns = int32(vals["store.postgres.max_conns"].(int64))
	c.Store.Postgres.AppendGroups = int(vals["store.postgres.append_groups"].(int64))
	c.Store.ESDB.URL = str("store.esdb.url")
	c.Auth.AdminKey = str("auth.admin_key")
	c.Delivery.AllowPrivateNetworks = vals["delivery.allow_private_networks"].(bool)
	c.Delivery.Timeout = dur("delivery.timeout")
	c.Delivery.MaxIdleConnsPerHost = int(vals["delivery.max_idle_conns_per_host"].(int64))
	c.Delivery.AttemptRetention = dur("delivery.attempt_retention")
	c.Delivery.CircuitFailures = int(vals["delivery.circuit_failures"].(int64))
	c.Delivery.CircuitCooldown = dur("delivery.circuit_cooldown")
	c.Delivery.DrainTimeout = dur("delivery.drain_timeout")
	c.Replay.MaxWindow = dur("replay.max_window")
	return &c, nil
}

var (
	schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	sizeRE   = regexp.MustCompile(`^([0-9]+)\s*([KMG]i?B|B)?$`)
)

// validate checks the cross-field rules; the first problem wins.
func (c *config) validate() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return cfgErr("log.level", "unknown level %q (want debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return cfgErr("log.format", "unknown format %q (want text or json)", c.Log.Format)
	}
	host, port, err := net.SplitHostPort(c.HTTP.Addr)
	if err != nil {
		return cfgErr("http.addr", "%q is not host:port", c.HTTP.Addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return cfgErr("http.addr", "%q has no valid port", c.HTTP.Addr)
	}
	_ = host // empty host = all interfaces, as net.Listen has it
	switch c.Store.Driver {
	case "embedded":
		if c.Store.Path == "" {
			return cfgErr("store.path", "must not be empty for store.driver=embedded")
		}
	case "postgres":
		if err := c.validatePostgres("postgres"); err != nil {
			return err
		}
	case "esdb":
		if c.Store.ESDB.URL == "" {
			return cfgErr("store.esdb.url", "is required for store.driver=esdb (e.g. esdb://127.0.0.1:2113?tls=false)")
		}
		if _, err := kdb.ParseConnectionString(c.Store.ESDB.URL); err != nil {
			return cfgErr("store.esdb.url", "cannot be parsed: %s", oneLine(maskPassword(err.Error(), c.Store.ESDB.URL)))
		}
		// The esdb backend keeps its side state (checkpoints, the attempts
		// index, the id and time indexes) in PostgreSQL.
		if err := c.validatePostgres("esdb"); err != nil {
			return err
		}
	default:
		return cfgErr("store.driver", "unknown driver %q (want embedded, postgres or esdb)", c.Store.Driver)
	}
	if c.Delivery.MaxIdleConnsPerHost < 1 {
		return cfgErr("delivery.max_idle_conns_per_host", "must be at least 1, got %d", c.Delivery.MaxIdleConnsPerHost)
	}
	if c.Delivery.CircuitFailures < 1 {
		return cfgErr("delivery.circuit_failures", "must be at least 1, got %d", c.Delivery.CircuitFailures)
	}
	return nil
}

// validatePostgres checks store.postgres.* for a driver that needs them.
func (c *config) validatePostgres(driver string) error {
	if c.Store.Postgres.URL == "" {
		what := ""
		if driver == "esdb" {
			what = ", which keeps its side state there"
		}
		return cfgErr("store.postgres.url", "is required for store.driver=%s%s (e.g. postgres://user@127.0.0.1:5432/db)", driver, what)
	}
	if _, err := pgconn.ParseConfig(c.Store.Postgres.URL); err != nil {
		// pgconn masks the password in its message.
		return cfgErr("store.postgres.url", "cannot be parsed: %s", oneLine(err.Error()))
	}
	if !schemaRE.MatchString(c.Store.Postgres.Schema) {
		return cfgErr("store.postgres.schema", "%q is not a plain lower-case SQL identifier", c.Store.Postgres.Schema)
	}
	return nil
}

// maskPassword replaces the password of connection string conn wherever it
// appears in msg (the esdb client quotes the whole string in its errors).
func maskPassword(msg, conn string) string {
	_, rest, ok := strings.Cut(conn, "://")
	if !ok {
		return msg
	}
	userinfo, _, ok := strings.Cut(rest, "@")
	if !ok {
		return msg
	}
	if _, pw, ok := strings.Cut(userinfo, ":"); ok && pw != "" {
		return strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return msg
}

// parseSize parses "1048576", "512KiB", "1MiB", "1MB", "2GiB".
func parseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size (want bytes or e.g. \"512KiB\", \"1MiB\")", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	mult := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m[2]]
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// oneLine folds a multi-line error message (YAML errors have several) into one.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
