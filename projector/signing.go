package projector

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every signing secret: "whsec_" + base64 of the key.
const SecretPrefix = "whsec_"

// Sign returns the webhook-signature header of a delivery under the Standard
// Webhooks 1.0 scheme: for each secret, "v1," + base64(HMAC-SHA256(key,
// id + "." + unix seconds of ts + "." + body)), joined by single spaces. The
// key is the base64-decoded part of the secret after "whsec_". During a
// rotation grace period the caller passes both secrets (newest first) and a
// receiver holding either one verifies the delivery.
//
// A secret that is not valid base64 after the prefix (hooklog never makes
// one) signs with its raw bytes, so a delivery is still signed rather than
// sent without a signature.
func Sign(secrets []string, id string, ts time.Time, body []byte) string {
	if len(secrets) == 0 {
		return ""
	}
	unix := strconv.FormatInt(ts.Unix(), 10)
	parts := make([]string, 0, len(secrets))
	for _, s := range secrets {
		mac := hmac.New(sha256.New, secretKey(s))
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(unix))
		mac.Write([]byte{'.'})
		mac.Write(body)
		parts = append(parts, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(parts, " ")
}

// secretKey is the HMAC key of a secret: the bytes its base64 text encodes
// after the prefix, or the raw text when it is not base64.
func secretKey(secret string) []byte {
	enc := strings.TrimPrefix(secret, SecretPrefix)
	if key, err := base64.StdEncoding.DecodeString(enc); err == nil {
		return key
	}
	return []byte(enc)
}
