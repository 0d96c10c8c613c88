package projector

import (
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
	// HMAC (RFC 2104) by hand over one digest: crypto/hmac allocates two
	// digests and its pads per call, and this runs on every attempt.
	h := sha256.New()
	var tsBuf [20]byte
	unix := strconv.AppendInt(tsBuf[:0], ts.Unix(), 10)
	var keyBuf [sha256.BlockSize]byte
	var pad [sha256.BlockSize]byte
	var inner, sum [sha256.Size]byte
	out := make([]byte, 0, len(secrets)*(len("v1,")+base64.StdEncoding.EncodedLen(sha256.Size)+1))
	for i, s := range secrets {
		key := secretKey(keyBuf[:0], s)
		if len(key) > sha256.BlockSize {
			sum = sha256.Sum256(key)
			key = sum[:]
		}
		padKey(&pad, key, 0x36)
		h.Reset()
		h.Write(pad[:])
		h.Write([]byte(id))
		h.Write([]byte{'.'})
		h.Write(unix)
		h.Write([]byte{'.'})
		h.Write(body)
		h.Sum(inner[:0])
		padKey(&pad, key, 0x5c)
		h.Reset()
		h.Write(pad[:])
		h.Write(inner[:])
		h.Sum(sum[:0])
		if i > 0 {
			out = append(out, ' ')
		}
		out = append(out, "v1,"...)
		out = base64.StdEncoding.AppendEncode(out, sum[:])
	}
	return string(out)
}

// padKey sets pad to key (zero-filled to the block size) XOR x.
func padKey(pad *[sha256.BlockSize]byte, key []byte, x byte) {
	*pad = [sha256.BlockSize]byte{}
	copy(pad[:], key)
	for i := range pad {
		pad[i] ^= x
	}
}

// secretKey appends the HMAC key of a secret to dst: the bytes its base64
// text encodes after the prefix, or the raw text when it is not base64.
func secretKey(dst []byte, secret string) []byte {
	enc := strings.TrimPrefix(secret, SecretPrefix)
	if key, err := base64.StdEncoding.AppendDecode(dst, []byte(enc)); err == nil {
		return key
	}
	return append(dst[:0], enc...)
}
