package projector

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	return sign(nil, secrets, id, strconv.FormatInt(ts.Unix(), 10), body)
}

// sigLen is the length of one "v1,<base64 of a SHA-256 HMAC>".
var sigLen = len("v1,") + base64.StdEncoding.EncodedLen(sha256.Size)

// sign is Sign with the unix seconds already formatted, taking its HMAC
// states from macs (nil: fresh ones).
func sign(macs *macCache, secrets []string, id, unix string, body []byte) string {
	if len(secrets) == 0 {
		return ""
	}
	var sb strings.Builder
	sb.Grow(len(secrets)*(sigLen+1) - 1)
	var enc [44]byte // base64 of sha256.Size bytes
	for i, s := range secrets {
		st := macs.get(s)
		st.buf = append(append(append(append(st.buf[:0], id...), '.'), unix...), '.')
		st.mac.Write(st.buf)
		st.mac.Write(body)
		st.sum = st.mac.Sum(st.sum[:0])
		base64.StdEncoding.Encode(enc[:], st.sum)
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("v1,")
		sb.Write(enc[:])
		macs.put(s, st)
	}
	return sb.String()
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

// macState is one keyed HMAC-SHA256 (crypto/hmac) and its scratch space.
type macState struct {
	mac hash.Hash
	buf []byte // id "." unix "."
	sum []byte
}

func newMACState(secret string) *macState {
	return &macState{mac: hmac.New(sha256.New, secretKey(secret)), sum: make([]byte, 0, sha256.Size)}
}

// maxCachedSecrets bounds macCache; past it the cache starts over.
const maxCachedSecrets = 4096

// macCache keeps keyed HMAC states per secret for reuse with Reset, so an
// attempt neither decodes its secrets nor hashes their key pads again. A nil
// *macCache hands out fresh states.
type macCache struct {
	pools sync.Map // secret → *sync.Pool of *macState
	n     atomic.Int64
}

func (c *macCache) get(secret string) *macState {
	if c == nil {
		return newMACState(secret)
	}
	if p, ok := c.pools.Load(secret); ok {
		if st, _ := p.(*sync.Pool).Get().(*macState); st != nil {
			return st
		}
	}
	return newMACState(secret)
}

func (c *macCache) put(secret string, st *macState) {
	if c == nil {
		return
	}
	st.mac.Reset()
	p, ok := c.pools.Load(secret)
	if !ok {
		if c.n.Add(1) > maxCachedSecrets {
			c.pools.Clear() // rotated and deleted secrets go with the rest
			c.n.Store(1)
		}
		p, _ = c.pools.LoadOrStore(secret, &sync.Pool{})
	}
	p.(*sync.Pool).Put(st)
}
