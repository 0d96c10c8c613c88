package projector

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestAppendAttempt: the stored encoding decodes to the same Attempt.
func TestAppendAttempt(t *testing.T) {
	next := time.Date(2026, 11, 29, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	for _, a := range []Attempt{
		{ID: uuid.NewString(), EventID: uuid.NewString(), Attempt: 3, Status: StatusFailed, StatusCode: 503,
			Error: `HTTP 503 "busy" <\n> é`, DurationMS: 12.345, At: time.Now(), NextAttemptAt: &next, ReplayID: "r-1"},
		{ID: uuid.NewString(), EventID: uuid.NewString(), Attempt: 1, Status: StatusSucceeded, StatusCode: 200, At: time.Unix(0, 1).UTC()},
	} {
		enc := appendAttempt(nil, &a)
		var got Attempt
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		if !got.At.Equal(a.At) || (a.NextAttemptAt != nil) != (got.NextAttemptAt != nil) ||
			a.NextAttemptAt != nil && !got.NextAttemptAt.Equal(*a.NextAttemptAt) {
			t.Errorf("times: %s", enc)
		}
		got.At, got.NextAttemptAt, a.At, a.NextAttemptAt = time.Time{}, nil, time.Time{}, nil
		if !reflect.DeepEqual(got, a) {
			t.Errorf("%s decodes to %+v, want %+v", enc, got, a)
		}
	}
}

// TestAttemptsData: a flush's attempts are grouped by subscription, in order.
func TestAttemptsData(t *testing.T) {
	s1, s2 := uuid.New(), uuid.New()
	a := func(n int) []byte {
		return appendAttempt(nil, &Attempt{ID: uuid.NewString(), Attempt: n, Status: StatusSucceeded})
	}
	data := attemptsData([][]byte{s1[:], s2[:], s1[:]}, [][]byte{a(1), a(2), a(3)})
	var d AttemptsData
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	if len(d.Routes) != 2 || d.Routes[0].SubscriptionID != s1.String() || d.Routes[1].SubscriptionID != s2.String() ||
		len(d.Routes[0].Attempts) != 2 || d.Routes[0].Attempts[1].Attempt != 3 || d.Routes[1].Attempts[0].Attempt != 2 {
		t.Errorf("grouped wrongly: %s", data)
	}
}
