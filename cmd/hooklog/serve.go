package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hooklog server",
		Long: `Run the HTTP API on http.addr with the configured event store.

Configuration, lowest to highest precedence: built-in defaults, configs/hooklog.yaml
(or --config FILE), HOOKLOG_* environment variables (http.addr is HOOKLOG_HTTP_ADDR),
--dev, and flags given explicitly (--http.addr 127.0.0.1:9000).
The projector delivers webhooks in the same process.

SIGTERM or SIGINT drains: stop accepting, let in-flight requests finish for up to
http.shutdown_timeout, then stop the projector, letting deliveries in flight finish
for up to delivery.drain_timeout (those abandoned are sent again after a restart,
with the same webhook-id), close the store, exit 0. A second signal exits at once.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		}),
	}
	addConfigFlags(cmd.Flags())
	return cmd
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs until SIGTERM/SIGINT (or ctx ends), then drains.
func serve(ctx context.Context, cfg *config, stdout, logw io.Writer) error {
	log := newLogger(cfg, logw)
	if cfg.File != "" {
		log.Info("configuration file read", "file", cfg.File)
	}
	if cfg.Dev {
		log.Warn("development mode: private and loopback delivery targets are allowed; do not use in production")
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	openCtx, cancelOpen := context.WithCancel(ctx)
	go func() { // a signal while the store is still opening aborts the open
		select {
		case <-sigs:
			cancelOpen()
		case <-openCtx.Done():
		}
	}()
	store, err := openStore(openCtx, cfg, log)
	aborted := openCtx.Err() != nil && ctx.Err() == nil
	cancelOpen()
	if err != nil {
		if aborted {
			log.Info("stopped while opening the store")
			return nil
		}
		return fmt.Errorf("open %s store: %w", cfg.Store.Driver, err)
	}
	closeStore := func() error {
		if err := store.Close(); err != nil {
			return fmt.Errorf("close store: %w", err)
		}
		return nil
	}
	log.Info("store opened", "driver", cfg.Store.Driver, "location", storeLocation(cfg))

	a, err := newApp(ctx, cfg, store, log, stdout)
	if err != nil {
		return errors.Join(err, closeStore())
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return errors.Join(fmt.Errorf("http.addr: %w", err), closeStore())
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("hooklog listening", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String())

	var serveErr error
	select {
	case sig := <-sigs:
		log.Info("draining", "signal", sig.String(), "timeout", cfg.HTTP.ShutdownTimeout.String())
	case <-ctx.Done():
		log.Info("draining", "reason", context.Cause(ctx))
	case serveErr = <-served:
		log.Error("http server failed", "err", serveErr)
	}
	// From here a second signal gets Go's default action: exit at once.
	signal.Stop(sigs)

	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	a.drain()
	shutErr := srv.Shutdown(shutCtx)
	if shutErr != nil {
		log.Warn("in-flight requests abandoned at shutdown timeout", "err", shutErr)
		_ = srv.Close()
		shutErr = nil // abandoned requests are the client's to retry; still a clean stop
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return errors.Join(serveErr, a.close(), closeStore())
	}
	if err := errors.Join(a.close(), closeStore()); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func storeLocation(cfg *config) string {
	switch cfg.Store.Driver {
	case "embedded":
		return cfg.Store.Path
	case "postgres":
		return redactURL(cfg.Store.Postgres.URL) + " schema=" + cfg.Store.Postgres.Schema
	case "esdb":
		return redactURL(cfg.Store.ESDB.URL) + " state=" + redactURL(cfg.Store.Postgres.URL) + " schema=" + cfg.Store.Postgres.Schema
	}
	return ""
}
