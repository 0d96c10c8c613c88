package postgres

import (
	"fmt"
	"regexp"
	"time"
)

// Config configures Open.
type Config struct {
	// URL is the PostgreSQL connection string (URL or keyword/value form,
	// anything pgxpool.ParseConfig accepts). Required.
	URL string
	// Schema holds every table and function of the store. Default "hooklog".
	// It must be a plain lower-case identifier ([a-z_][a-z0-9_]*, at most 63
	// bytes); it is created if missing.
	Schema string
	// MaxConns is the pool size. Default 0: the URL's pool_max_conns, else
	// pgxpool's default (the larger of 4 and the number of CPUs). The LISTEN
	// connection is one more, outside the pool.
	MaxConns int32
	// PollInterval is how often the watcher re-reads the visible head when no
	// notification arrives. Default 100ms.
	PollInterval time.Duration
	// AppendGroups is how many group statements of single-event Appends run
	// at once (see group.go): Appends that arrive while all of them are busy
	// share the next one, and its transaction. Default 0: DefaultAppendGroups.
	// Negative: every Append is its own statement.
	AppendGroups int
}

// Defaults.
const (
	DefaultSchema       = "hooklog"
	DefaultPollInterval = 100 * time.Millisecond
)

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// withDefaults returns c with defaults filled in.
func (c Config) withDefaults() Config {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.AppendGroups == 0 {
		c.AppendGroups = DefaultAppendGroups
	}
	return c
}

// validate names the first bad field.
func (c Config) validate() error {
	switch {
	case c.URL == "":
		return fmt.Errorf("postgres: Config.URL is required")
	case !schemaRE.MatchString(c.Schema):
		return fmt.Errorf("postgres: Config.Schema %q must match %s", c.Schema, schemaRE)
	case c.MaxConns < 0:
		return fmt.Errorf("postgres: Config.MaxConns must not be negative, got %d", c.MaxConns)
	case c.PollInterval < 0:
		return fmt.Errorf("postgres: Config.PollInterval must not be negative, got %s", c.PollInterval)
	}
	return nil
}
