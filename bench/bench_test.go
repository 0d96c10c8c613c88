package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// The scenarios run end to end (briefly) and report a row each; the figures
// themselves are for `hooklog bench`, not for tests.
func TestRunAppendEmbedded(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short")
	}
	res, err := RunAppend(context.Background(), AppendOptions{
		Drivers: []string{"embedded"}, Duration: 200 * time.Millisecond, Dir: t.TempDir(),
		Concurrency: 4, TailRate: 200,
	})
	if err != nil {
		t.Fatal(err)
	}
	// batch, bare bbolt reference, single-event, tail latency (with its floor).
	checkResults(t, res, 4)
	if r := res[1]; r.Met != nil || r.Ratio <= 0 || !strings.Contains(r.Baseline, "hooklog (WAL in front of bbolt) reaches") {
		t.Errorf("engine reference row: %+v", r)
	}
	if r := res[3]; !strings.Contains(r.Baseline, "fsync") || r.Ratio <= 0 {
		t.Errorf("tail latency row without its floor: %+v", r)
	}
}

func TestRunAppendPostgres(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	if testing.Short() {
		t.Skip("short")
	}
	res, err := RunAppend(context.Background(), AppendOptions{
		Drivers: []string{"postgres"}, PostgresURL: url, Duration: 200 * time.Millisecond,
		Concurrency: 4, TailRate: 200,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkResults(t, res, 3)
}

func checkResults(t *testing.T, res []Result, n int) {
	t.Helper()
	if len(res) != n {
		t.Fatalf("got %d results, want %d: %+v", len(res), n, res)
	}
	for _, r := range res {
		if r.Value <= 0 || r.Text == "" || (r.Baseline != "" && (r.BaselineValue <= 0 || r.Ratio <= 0)) {
			t.Errorf("implausible result: %+v", r)
		}
	}
	var buf bytes.Buffer
	if err := Print(&buf, "title", res); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(buf.String(), "\n"); lines < n+2 {
		t.Errorf("table too short:\n%s", buf.String())
	}
}

func TestPayloadSize(t *testing.T) {
	t.Parallel()
	for _, size := range []int{500, 1000} {
		if got := len(line("bench-w-00", payload(size))); got < size-2 || got > size+2 {
			t.Errorf("payload(%d) gives %d-byte lines", size, got)
		}
	}
}

// rawClient reads fixed-length and chunked answers on one kept-alive
// connection, and reports a non-201 status.
func TestRawClient(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 64<<10) // over the server's buffer: chunked
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer k" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusCreated)
		if string(b) == "big" {
			_, _ = io.WriteString(w, big)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer srv.Close()
	c := &rawClient{addr: strings.TrimPrefix(srv.URL, "http://"), key: "k"}
	defer c.close()
	for i, body := range []string{"small", "big", "small", "big"} {
		if err := c.post("/x", []byte(body)); err != nil {
			t.Fatalf("request %d (%s): %v", i, body, err)
		}
	}
	bad := &rawClient{addr: c.addr, key: "wrong"}
	defer bad.close()
	if err := bad.post("/x", []byte("small")); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong key: %v", err)
	}
}
