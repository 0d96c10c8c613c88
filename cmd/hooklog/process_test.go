package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore/esdb/esdbtest"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// binary is the hooklog binary built once by TestMain for the tests that run
// it as a child process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hooklog-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "hooklog")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	build := exec.Command(gobin, "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building hooklog for the process tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running `hooklog serve` child process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string // host:port it listens on

	mu     sync.Mutex
	stderr bytes.Buffer
	stdout syncBuffer
	done   chan struct{}
	err    error // Wait's result, after done
}

// baseEnv is the environment for children: this process's, minus HOOKLOG_*
// settings that would leak into the configuration under test.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "HOOKLOG_") && !strings.HasPrefix(kv, "HOOKLOG_TEST_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// startServe runs `hooklog serve` with args in dir, waits until it logs its
// listening address, and stops it at cleanup if the test did not.
func startServe(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(binary, append([]string{"serve", "--log.format", "json"}, args...)...)
	p.cmd.Dir = dir
	p.cmd.Env = baseEnv(env...)
	p.cmd.Stdout = &p.stdout
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "hooklog listening" {
				addrc <- rec.Addr
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case p.addr = <-addrc:
	case <-p.done:
		t.Fatalf("hooklog serve exited before listening: %v\n%s", p.err, p.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("hooklog serve did not start listening in 30s\n%s", p.log())
	}
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *proc) url(path string) string { return "http://" + p.addr + path }

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady() {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(p.url("/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("/readyz not 200 after 15s (last: %v)\n%s", err, p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and returns the exit status.
func (p *proc) stop(sig syscall.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("hooklog did not exit within 20s of %v\n%s", sig, p.log())
	}
	return p.cmd.ProcessState.ExitCode()
}

// runHooklog runs the binary to completion and returns stdout, stderr and the
// exit status.
func runHooklog(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	cmd.Env = baseEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("run hooklog %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// serve on a free port with a temp store: the first start prints a generated
// admin key once; SIGTERM drains and exits 0; a restart finds the data (the
// event and the key, both in the log) and prints no new key.
func TestServeSIGTERMAndRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "store")
	args := []string{"--http.addr", "127.0.0.1:0", "--store.path", data}

	p := startServe(t, dir, nil, args...)
	p.waitReady()
	key := regexp.MustCompile(`(?m)^    export HOOKLOG_KEY=(\S+)$`).FindStringSubmatch(p.stdout.String())
	if key == nil {
		t.Fatalf("first start printed no admin key; stdout:\n%s", p.stdout.String())
	}
	if code, body := get(t, p.url("/healthz")); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	out := mustCLI(t, "http://"+p.addr, key[1], "events", "append", "order-1", "order.created", `{"n":1}`)
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0\n%s", code, p.log())
	}
	for _, want := range []string{`"msg":"draining"`, `"msg":"stopped"`} {
		if !strings.Contains(p.log(), want) {
			t.Errorf("log lacks %s:\n%s", want, p.log())
		}
	}
	if strings.Count(p.stdout.String(), key[1]) != 1 {
		t.Errorf("the admin key was printed more than once:\n%s", p.stdout.String())
	}

	// The restart opens the existing store (and SIGINT drains the same way).
	p = startServe(t, dir, nil, args...)
	p.waitReady()
	if strings.Contains(p.stdout.String(), "HOOKLOG_KEY") {
		t.Errorf("restart generated another admin key:\n%s", p.stdout.String())
	}
	tail := mustCLI(t, "http://"+p.addr, key[1], "events", "tail", "--after", "start", "--no-follow")
	pos := regexp.MustCompile(`position ([0-9a-f]{32})`).FindStringSubmatch(out)
	if pos == nil || !strings.Contains(tail, pos[1]+" order-1@0 order.created") {
		t.Errorf("after restart the event is missing; appended %q, tail:\n%s", out, tail)
	}
	if code := p.stop(syscall.SIGINT); code != 0 {
		t.Fatalf("exit status after SIGINT = %d, want 0\n%s", code, p.log())
	}
	if !strings.Contains(p.log(), `"location":"`+data+`"`) {
		t.Errorf("restart did not open %s:\n%s", data, p.log())
	}
}

// A long-poll in flight does not hold the shutdown for its wait: it gets 503
// with Retry-After, and the process exits 0 promptly.
func TestServeDrainEndsLongPolls(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir, []string{"HOOKLOG_AUTH_ADMIN_KEY=" + testAdminKey}, "--http.addr", "127.0.0.1:0", "--store.path", "data")
	p.waitReady()
	type answer struct {
		status int
		retry  string
		err    error
	}
	got := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, p.url("/v1/events?after=now&wait=60s"), nil)
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- answer{err: err}
			return
		}
		resp.Body.Close()
		got <- answer{status: resp.StatusCode, retry: resp.Header.Get("Retry-After")}
	}()
	time.Sleep(300 * time.Millisecond) // the poll is now waiting at the head
	start := time.Now()
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.log())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s with a long-poll in flight", d)
	}
	select {
	case a := <-got:
		if a.err != nil || a.status != http.StatusServiceUnavailable || a.retry == "" {
			t.Fatalf("long-poll during shutdown: %+v, want 503 with Retry-After", a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the long-poll did not return")
	}
}

// HOOKLOG_SERVER and HOOKLOG_KEY configure the client subcommands.
func TestCLIEnvironment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir, []string{"HOOKLOG_AUTH_ADMIN_KEY=" + testAdminKey}, "--http.addr", "127.0.0.1:0", "--store.path", "data")
	p.waitReady()
	env := []string{"HOOKLOG_SERVER=http://" + p.addr, "HOOKLOG_KEY=" + testAdminKey}
	stdout, stderr, code := runHooklog(t, dir, env, "events", "append", "s-1", "a.b", `{}`)
	if code != 0 || !strings.HasPrefix(stdout, "appended ") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	// The flag beats the environment.
	_, stderr, code = runHooklog(t, dir, env, "keys", "list", "--key", "wrong")
	if code != 1 || !strings.Contains(stderr, "401") {
		t.Fatalf("--key over HOOKLOG_KEY: exit %d, %s", code, stderr)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// A second server on the same embedded directory fails fast (exit 1) instead
// of hanging or corrupting it.
func TestServeStoreLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir, nil, "--http.addr", "127.0.0.1:0", "--store.path", "data")
	p.waitReady()
	_, stderr, code := runHooklog(t, dir, nil, "serve", "--http.addr", "127.0.0.1:0", "--store.path", "data")
	if code != 1 || !strings.Contains(stderr, "locked") {
		t.Fatalf("second serve on the same store: exit %d, stderr:\n%s", code, stderr)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// A bad configuration stops serve at start: exit 2, one line naming the key.
func TestServeConfigErrorExit2(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown driver", []string{"HOOKLOG_STORE_DRIVER=mongo"}, nil, `hooklog: configuration: store.driver: unknown driver "mongo"`},
		{"malformed duration", nil, []string{"--delivery.timeout", "ten"}, `hooklog: configuration: delivery.timeout: "ten" is not a positive duration`},
		{"postgres without url", []string{"HOOKLOG_STORE_DRIVER=postgres"}, nil, `hooklog: configuration: store.postgres.url: is required`},
		{"unparsable postgres url", []string{"HOOKLOG_STORE_DRIVER=postgres", "HOOKLOG_STORE_POSTGRES_URL=postgres://a:b@h:x/db"}, nil, `hooklog: configuration: store.postgres.url: cannot be parsed`},
		{"esdb without url", nil, []string{"--store.driver", "esdb"}, `hooklog: configuration: store.esdb.url: is required for store.driver=esdb`},
		{"esdb without postgres", []string{"HOOKLOG_STORE_ESDB_URL=esdb://127.0.0.1:2113?tls=false"}, []string{"--store.driver", "esdb"}, `hooklog: configuration: store.postgres.url: is required for store.driver=esdb`},
		{"nested env key", []string{"HOOKLOG_DELIVERY_ALLOW_PRIVATE_NETWORKS=sometimes"}, nil, `hooklog: configuration: delivery.allow_private_networks: "sometimes" is not a boolean`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			stdout, stderr, code := runHooklog(t, dir, tc.env, append([]string{"serve"}, tc.args...)...)
			if code != 2 {
				t.Fatalf("exit status %d, want 2; stderr:\n%s", code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Fatalf("stderr = %q, want one line starting %q", stderr, tc.want)
			}
			if stdout != "" {
				t.Fatalf("stdout = %q, want nothing", stdout)
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
				t.Fatalf("a failed start created ./data (%v)", err)
			}
		})
	}
}

// Environment beats the file and flags beat the environment, in the real
// binary; and the address serve listens on follows the same rule.
func TestServePrecedence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "configs"), 0o755); err != nil {
		t.Fatal(err)
	}
	// configs/hooklog.yaml in the working directory is read by default.
	yaml := "http:\n  addr: 127.0.0.1:1\nstore:\n  path: from-file\n  postgres:\n    schema: fromfile\ndelivery:\n  timeout: 1s\n"
	if err := os.WriteFile(filepath.Join(dir, "configs", "hooklog.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOOKLOG_STORE_POSTGRES_SCHEMA=fromenv", "HOOKLOG_DELIVERY_TIMEOUT=2s"}
	stdout, stderr, code := runHooklog(t, dir, env, "config", "--delivery.timeout", "3s")
	if code != 0 {
		t.Fatalf("hooklog config: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"# file: configs/hooklog.yaml",
		`http.addr: "127.0.0.1:1"`,               // file
		`store.path: "from-file"`,                // file
		"store.postgres.schema: fromenv",         // env over file (nested key)
		"delivery.timeout: 3s",                   // flag over env over file
		"delivery.allow_private_networks: false", // default
	} {
		if !strings.Contains(stdout, want+"\n") {
			t.Errorf("hooklog config output lacks %q:\n%s", want, stdout)
		}
	}

	// serve listens where the environment says (the file's port 1 would fail),
	// and stores where the file says.
	p := startServe(t, dir, []string{"HOOKLOG_HTTP_ADDR=127.0.0.1:0"})
	p.waitReady()
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.log())
	}
	if _, err := os.Stat(filepath.Join(dir, "from-file")); err != nil {
		t.Fatalf("store.path from the file was not used: %v", err)
	}
}

// serve on PostgreSQL: migrates a fresh schema, is ready, drains on SIGTERM,
// and a restart on the same schema is ready again.
func TestServePostgres(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	schema := pgtest.Schema(t)
	env := []string{"HOOKLOG_STORE_DRIVER=postgres", "HOOKLOG_STORE_POSTGRES_URL=" + url, "HOOKLOG_STORE_POSTGRES_SCHEMA=" + schema}
	for i := 0; i < 2; i++ {
		p := startServe(t, t.TempDir(), env, "--http.addr", "127.0.0.1:0")
		p.waitReady()
		if code := p.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i, code, p.log())
		}
	}
}

// A store that cannot be opened stops serve with exit 1 and one line.
func TestServeStoreUnreachable(t *testing.T) {
	t.Parallel()
	env := []string{"HOOKLOG_STORE_DRIVER=postgres", "HOOKLOG_STORE_POSTGRES_URL=postgres://nobody@127.0.0.1:1/none?connect_timeout=5"}
	_, stderr, code := runHooklog(t, t.TempDir(), env, "serve")
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "hooklog: open postgres store: ") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// serve on esdb: KurrentDB is the in-process test server (a real gRPC server
// on 127.0.0.1), side state in a fresh PostgreSQL schema. It is ready, takes
// an event, drains on SIGTERM, and a restart finds the event.
func TestServeESDB(t *testing.T) {
	t.Parallel()
	pg := pgtest.URL(t)
	schema := pgtest.Schema(t)
	kdb := esdbtest.Start(t)
	env := []string{"HOOKLOG_STORE_DRIVER=esdb", "HOOKLOG_STORE_ESDB_URL=" + kdb.URL(),
		"HOOKLOG_STORE_POSTGRES_URL=" + pg, "HOOKLOG_STORE_POSTGRES_SCHEMA=" + schema, "HOOKLOG_AUTH_ADMIN_KEY=" + testAdminKey}
	p := startServe(t, t.TempDir(), env, "--http.addr", "127.0.0.1:0")
	p.waitReady()
	out := mustCLI(t, "http://"+p.addr, testAdminKey, "events", "append", "order-1", "order.created", `{"n":1}`)
	pos := regexp.MustCompile(`position ([0-9a-f]{32})`).FindStringSubmatch(out)
	if pos == nil {
		t.Fatalf("append: %q", out)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.log())
	}
	if !strings.Contains(p.log(), `"driver":"esdb"`) || !strings.Contains(p.log(), "schema="+schema) {
		t.Errorf("log does not name the esdb store:\n%s", p.log())
	}
	p = startServe(t, t.TempDir(), env, "--http.addr", "127.0.0.1:0")
	p.waitReady()
	tail := mustCLI(t, "http://"+p.addr, testAdminKey, "events", "tail", "--after", "start", "--no-follow")
	if !strings.Contains(tail, pos[1]+" order-1@0 order.created") {
		t.Errorf("after restart the event is missing; tail:\n%s", tail)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.log())
	}
}

// An esdb server that does not answer stops serve with exit 1 and one line.
func TestServeESDBUnreachable(t *testing.T) {
	t.Parallel()
	pg := pgtest.URL(t)
	schema := pgtest.Schema(t)
	env := []string{"HOOKLOG_STORE_DRIVER=esdb", "HOOKLOG_STORE_ESDB_URL=esdb://127.0.0.1:1?tls=false",
		"HOOKLOG_STORE_POSTGRES_URL=" + pg, "HOOKLOG_STORE_POSTGRES_SCHEMA=" + schema}
	_, stderr, code := runHooklog(t, t.TempDir(), env, "serve")
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if code != 1 || !strings.HasPrefix(lines[len(lines)-1], "hooklog: open esdb store: ") {
		t.Fatalf("exit %d, stderr %q", code, stderr) // the log may warn first; the error is the last line
	}
}
