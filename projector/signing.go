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
	mac  hash.Hash
	buf  []byte // id "." unix "."
	sum  []byte
	pool *sync.Pool // where it goes back (nil: a fresh state, not kept)
}

func newMACState(secret string) *macState {
	return &macState{mac: hmac.New(sha256.New, secretKey(secret)), sum: make([]byte, 0, sha256.Size)}
}

// maxCachedSecrets bounds macCache; past it the cache starts over.
const maxCachedSecrets = 4096

// macCache keeps keyed HMAC states per secret for reuse with Reset, so an
// attempt neither decodes its secrets nor hashes their key pads again. A nil
// *macCache hands out fresh states. Its map is copied on write (a new
// secret), so a lookup takes no lock and allocates nothing.
type macCache struct {
	pools atomic.Pointer[map[string]*sync.Pool]
	mu    sync.Mutex // adding a secret
}

func (c *macCache) get(secret string) *macState {
	if c == nil {
		return newMACState(secret)
	}
	p := c.pool(secret)
	st, _ := p.Get().(*macState)
	if st == nil {
		st = newMACState(secret)
		st.pool = p
	}
	return st
}

func (c *macCache) pool(secret string) *sync.Pool {
	if m := c.pools.Load(); m != nil {
		if p := (*m)[secret]; p != nil {
			return p
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[string]*sync.Pool
	if m := c.pools.Load(); m != nil {
		old = *m
	}
	if p := old[secret]; p != nil {
		return p
	}
	if len(old) >= maxCachedSecrets {
		old = nil // rotated and deleted secrets go with the rest
	}
	m := make(map[string]*sync.Pool, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	p := &sync.Pool{}
	m[secret] = p
	c.pools.Store(&m)
	return p
}

func (c *macCache) put(_ string, st *macState) {
	if st.pool == nil {
		return
	}
	st.mac.Reset()
	st.pool.Put(st)
}
