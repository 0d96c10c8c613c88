package projector_test

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hooklog/hooklog/projector"
)

// dlSecret makes a signing secret the way subscriptions does.
func dlSecret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return projector.SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// The example of the Standard Webhooks specification.
func TestSignSpecVector(t *testing.T) {
	t.Parallel()
	got := projector.Sign([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "msg_p5jXN8AQM9LWM0D4loKWxJek",
		time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

func dlHeaders(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", sig)
	return h
}

// Each signature the official verifier accepts; with two secrets (rotation)
// each one alone verifies the header, and an unrelated one does not.
func TestSignVerifiedByStandardWebhooks(t *testing.T) {
	t.Parallel()
	newSecret, oldSecret, other := dlSecret(t), dlSecret(t), dlSecret(t)
	body := []byte(`{"id":"x","data":{"a":1}}`)
	ts := time.Now()
	const id = "0192f7a0-0000-7000-8000-000000000001"

	single := projector.Sign([]string{newSecret}, id, ts, body)
	if !strings.HasPrefix(single, "v1,") || strings.Contains(single, " ") {
		t.Fatalf("one secret: header %q, want one v1 signature", single)
	}
	both := projector.Sign([]string{newSecret, oldSecret}, id, ts, body)
	parts := strings.Split(both, " ")
	if len(parts) != 2 || parts[0] != single {
		t.Fatalf("two secrets: header %q, want the new secret's signature then the old one's", both)
	}
	for _, tc := range []struct {
		name, secret, header string
		ok                   bool
	}{
		{"single", newSecret, single, true},
		{"rotation/new secret", newSecret, both, true},
		{"rotation/old secret", oldSecret, both, true},
		{"rotation/unrelated secret", other, both, false},
		{"old secret after grace", oldSecret, single, false},
	} {
		wh, err := standardwebhooks.NewWebhook(tc.secret)
		if err != nil {
			t.Fatal(err)
		}
		err = wh.Verify(body, dlHeaders(id, ts, tc.header))
		if (err == nil) != tc.ok {
			t.Errorf("%s: Verify = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	// Changing any signed part breaks it.
	wh, _ := standardwebhooks.NewWebhook(newSecret)
	if wh.Verify([]byte(`{"id":"y"}`), dlHeaders(id, ts, single)) == nil {
		t.Error("a changed body verified")
	}
	if wh.Verify(body, dlHeaders("other", ts, single)) == nil {
		t.Error("a changed id verified")
	}
	if wh.Verify(body, dlHeaders(id, ts.Add(time.Second), single)) == nil {
		t.Error("a changed timestamp verified")
	}
	// Keys longer than SHA-256's block are hashed first (RFC 2104); a secret
	// that is not base64 signs with its raw text.
	longKey := make([]byte, 100)
	_, _ = rand.Read(longKey)
	long := projector.SecretPrefix + base64.StdEncoding.EncodeToString(longKey)
	whLong, _ := standardwebhooks.NewWebhook(long)
	if err := whLong.Verify(body, dlHeaders(id, ts, projector.Sign([]string{long}, id, ts, body))); err != nil {
		t.Errorf("100-byte key: %v", err)
	}
	whRaw, _ := standardwebhooks.NewWebhookRaw([]byte("not base64!"))
	if err := whRaw.Verify(body, dlHeaders(id, ts, projector.Sign([]string{"whsec_not base64!"}, id, ts, body))); err != nil {
		t.Errorf("secret that is not base64: %v", err)
	}
	if got := projector.Sign(nil, id, ts, body); got != "" {
		t.Errorf("no secrets: %q, want empty", got)
	}
}

func BenchmarkSign(b *testing.B) {
	secrets := []string{dlSecret(b), dlSecret(b)}
	body := make([]byte, 512)
	ts := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		projector.Sign(secrets, "0192f7a0-0000-7000-8000-000000000001", ts, body)
	}
}
