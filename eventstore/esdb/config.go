package esdb

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	kdb "github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/hooklog/hooklog/eventstore/postgres"
)

// Config configures Open.
type Config struct {
	// URL is the KurrentDB/EventStoreDB connection string, e.g.
	// esdb://127.0.0.1:2113?tls=false. Required. Open makes the client try
	// discovery once per connection attempt (maxDiscoverAttempts=1): the
	// store retries with its own backoff instead.
	URL string

	// Postgres holds the side state (state buckets, the event-id and
	// time-to-position indexes). The caller owns it and closes it after the
	// Store. Set either Postgres or PostgresURL.
	Postgres *postgres.Store
	// PostgresURL opens a PostgreSQL store of its own in Schema, closed by
	// Close.
	PostgresURL string
	// Schema is the PostgreSQL schema of the esdb tables (esdb_*), and of the
	// store opened from PostgresURL. With Postgres set, pass the schema that
	// store uses. Default "hooklog". One schema per KurrentDB database and
	// StreamPrefix.
	Schema string

	// StreamPrefix namespaces hooklog's streams in a KurrentDB database that
	// others use too: stream s is stored as StreamPrefix+s, and events of
	// other streams are ignored like system events. Default "" (every
	// non-system stream is hooklog's). It must match [A-Za-z0-9._:-]*.
	StreamPrefix string

	// TimeIndexInterval is how much recorded time separates two rows of the
	// time-to-position index. Default 1s.
	TimeIndexInterval time.Duration
	// ClockSkew is how far recorded times may run backwards along the log
	// (server clock steps, leader changes); PositionAt starts that much
	// earlier. Default 1s.
	ClockSkew time.Duration
	// ReservationTTL is how long an append's id reservation blocks a
	// concurrent retry of the same ids before the retry takes it over (the
	// reserving process may have died). Default 10s.
	ReservationTTL time.Duration

	// ReconnectMin and ReconnectMax bound the backoff between connection
	// attempts while the server is unreachable. Defaults 50ms and 2s.
	ReconnectMin, ReconnectMax time.Duration

	// Logger receives reconnects and index errors, and the client's own log
	// at debug level. Default: discard.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultSchema            = "hooklog"
	DefaultTimeIndexInterval = time.Second
	DefaultClockSkew         = time.Second
	DefaultReservationTTL    = 10 * time.Second
	DefaultReconnectMin      = 50 * time.Millisecond
	DefaultReconnectMax      = 2 * time.Second
)

var (
	schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{0,100}$`)
)

func (c Config) withDefaults() Config {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.TimeIndexInterval == 0 {
		c.TimeIndexInterval = DefaultTimeIndexInterval
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = DefaultClockSkew
	}
	if c.ReservationTTL == 0 {
		c.ReservationTTL = DefaultReservationTTL
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate names the first bad field.
func (c Config) validate() error {
	switch {
	case c.URL == "":
		return fmt.Errorf("esdb: Config.URL is required")
	case c.Postgres == nil && c.PostgresURL == "":
		return fmt.Errorf("esdb: Config.Postgres or Config.PostgresURL is required (side state lives in PostgreSQL)")
	case c.Postgres != nil && c.PostgresURL != "":
		return fmt.Errorf("esdb: set only one of Config.Postgres and Config.PostgresURL")
	case !schemaRE.MatchString(c.Schema):
		return fmt.Errorf("esdb: Config.Schema %q must match %s", c.Schema, schemaRE)
	case !prefixRE.MatchString(c.StreamPrefix):
		return fmt.Errorf("esdb: Config.StreamPrefix %q must match %s", c.StreamPrefix, prefixRE)
	case c.TimeIndexInterval < 0:
		return fmt.Errorf("esdb: Config.TimeIndexInterval must not be negative")
	case c.ClockSkew < 0:
		return fmt.Errorf("esdb: Config.ClockSkew must not be negative")
	case c.ReservationTTL < 0:
		return fmt.Errorf("esdb: Config.ReservationTTL must not be negative")
	case c.ReconnectMin < 0 || c.ReconnectMax < c.ReconnectMin:
		return fmt.Errorf("esdb: Config.ReconnectMin must be >= 0 and <= Config.ReconnectMax")
	}
	if _, err := kdb.ParseConnectionString(c.URL); err != nil {
		return fmt.Errorf("esdb: Config.URL: %w", err)
	}
	return nil
}

// clientConfig parses the URL into the client's configuration, with one
// discovery attempt per client (the store reconnects itself) and the
// client's log routed to logger at debug level.
func (c Config) clientConfig() (*kdb.Configuration, error) {
	kc, err := kdb.ParseConnectionString(c.URL)
	if err != nil {
		return nil, fmt.Errorf("esdb: Config.URL: %w", err)
	}
	kc.MaxDiscoverAttempts = 1
	kc.DiscoveryInterval = 10
	log := c.Logger
	kc.Logger = func(level kdb.LogLevel, format string, args ...any) {
		log.Debug(fmt.Sprintf(format, args...), "component", "esdb-client", "level", level)
	}
	return kc, nil
}
