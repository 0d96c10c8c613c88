package projector

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
)

func recordAttempts() []Attempt {
	next := time.Date(2026, 11, 29, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	return []Attempt{
		{ID: uuid.NewString(), EventID: uuid.NewString(), Attempt: 3, Status: StatusFailed, StatusCode: 503,
			Error: `HTTP 503 "busy" <\n> é`, DurationMS: 12.345, At: time.Now(), NextAttemptAt: &next, ReplayID: "r-1"},
		{ID: uuid.NewString(), EventID: uuid.NewString(), Attempt: 1, Status: StatusSucceeded, StatusCode: 200, At: time.Unix(0, 1).UTC()},
		{ID: uuid.NewString(), EventID: uuid.NewString(), Attempt: 40000, Status: StatusDead, Error: "connection refused",
			DurationMS: 1.0 / 3, At: time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
}

// sameAttempt compares attempts, times by Equal.
func sameAttempt(t *testing.T, got, want Attempt) {
	t.Helper()
	if !got.At.Equal(want.At) || (want.NextAttemptAt != nil) != (got.NextAttemptAt != nil) ||
		want.NextAttemptAt != nil && !got.NextAttemptAt.Equal(*want.NextAttemptAt) {
		t.Errorf("times: got %v %v, want %v %v", got.At, got.NextAttemptAt, want.At, want.NextAttemptAt)
	}
	got.At, got.NextAttemptAt, want.At, want.NextAttemptAt = time.Time{}, nil, time.Time{}, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestAttemptRecord: a record decodes to the same Attempt, and index values
// written as JSON (before records) still decode.
func TestAttemptRecord(t *testing.T) {
	for _, a := range recordAttempts() {
		rec := appendAttemptRecord(nil, &a)
		var got Attempt
		if n, err := decodeAttemptRecord(rec, &got); err != nil || n != len(rec) {
			t.Fatalf("%x: %d, %v", rec, n, err)
		}
		sameAttempt(t, got, a)
		if a.Error == "" && len(rec) > 60 {
			t.Errorf("record of %d bytes", len(rec))
		}
		for i := range len(rec) {
			if _, err := decodeAttemptRecord(rec[:i], &got); err == nil {
				t.Errorf("a record cut to %d of %d bytes decodes", i, len(rec))
			}
		}
		legacy, _ := json.Marshal(a)
		as, err := decodeGroup(legacy, nil)
		if err != nil || len(as) != 1 {
			t.Fatalf("%s: %v, %v", legacy, as, err)
		}
		sameAttempt(t, as[0], a)
	}
}

// TestDecodeGroup: a group's records decode in order; a truncated or empty
// group does not decode.
func TestDecodeGroup(t *testing.T) {
	as := recordAttempts()
	var g []byte
	for i := range as {
		g = appendAttemptRecord(g, &as[i])
	}
	got, err := decodeGroup(g, nil)
	if err != nil || len(got) != len(as) {
		t.Fatalf("%d attempts, %v", len(got), err)
	}
	for i := range as {
		sameAttempt(t, got[i], as[i])
	}
	if _, err := decodeGroup(g[:len(g)-1], nil); err == nil {
		t.Error("a truncated group decodes")
	}
	if _, err := decodeGroup(nil, nil); err == nil {
		t.Error("an empty group decodes")
	}
}

// TestAttemptKeys: the keys in the shared buffer are those of attemptKeys,
// and appending more to the buffer leaves them alone.
func TestAttemptKeys(t *testing.T) {
	sub := uuid.New()
	var buf []byte
	for _, a := range recordAttempts() {
		m, e, s := attemptKeys(sub[:], &a)
		var m2, e2, s2 []byte
		buf, m2, e2, s2 = appendAttemptKeys(buf, sub[:], &a)
		buf = append(buf, 0xff, 0xff)
		if string(m) != string(m2) || string(e) != string(e2) || string(s) != string(s2) {
			t.Errorf("keys differ: %x %x %x / %x %x %x", m, e, s, m2, e2, s2)
		}
		if (s == nil) != (a.Status == StatusSucceeded) {
			t.Errorf("status key %x for %s", s, a.Status)
		}
		if g, id := groupKeyFromIndex(sub[:], e, nil); string(g) != string(m) || id != a.ID {
			t.Errorf("groupKeyFromIndex of an entry without a value: %x %s", g, id)
		}
		tail := []byte("0123456789abcdefghijklmn")
		if g, id := groupKeyFromIndex(sub[:], e, tail); string(g) != string(sub[:])+string(tail) || id != a.ID {
			t.Errorf("groupKeyFromIndex: %x %s", g, id)
		}
	}
}

// TestAttemptsData: a flush's attempts are grouped by subscription, in order,
// and DecodeAttemptsData reads them back, as it reads the JSON form.
func TestAttemptsData(t *testing.T) {
	s1, s2 := uuid.New(), uuid.New()
	as := recordAttempts()
	recs := [][]byte{appendAttemptRecord(nil, &as[0]), appendAttemptRecord(nil, &as[1]), appendAttemptRecord(nil, &as[2])}
	data := attemptsData([][]byte{s1[:], s2[:]}, [][]byte{append(bytes.Clone(recs[0]), recs[2]...), recs[1]})
	if !json.Valid(data) {
		t.Fatalf("not JSON: %s", data)
	}
	d, err := DecodeAttemptsData(data)
	if err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	if len(d.Routes) != 2 || d.Routes[0].SubscriptionID != s1.String() || d.Routes[1].SubscriptionID != s2.String() ||
		len(d.Routes[0].Attempts) != 2 || len(d.Routes[1].Attempts) != 1 {
		t.Fatalf("grouped wrongly: %+v", d)
	}
	sameAttempt(t, d.Routes[0].Attempts[0], as[0])
	sameAttempt(t, d.Routes[0].Attempts[1], as[2])
	sameAttempt(t, d.Routes[1].Attempts[0], as[1])

	legacy, _ := json.Marshal(AttemptsData{Routes: []RouteAttempts{{SubscriptionID: s1.String(), Attempts: as}}})
	d, err = DecodeAttemptsData(legacy)
	if err != nil || len(d.Routes) != 1 || len(d.Routes[0].Attempts) != 3 {
		t.Fatalf("JSON form: %+v, %v", d, err)
	}
	sameAttempt(t, d.Routes[0].Attempts[2], as[2])
	if _, err := DecodeAttemptsData([]byte(`{"v":2,"routes":[{"subscription_id":"x","attempts":"AQID"}]}`)); err == nil {
		t.Error("a truncated record decodes")
	}
}
