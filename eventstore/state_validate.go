package eventstore

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits of StateOp, the same for every backend (PostgreSQL indexes the key
// in a B-tree whose entries are limited to about 2.7 KB).
const (
	MaxStateBucketLen = 200
	MaxStateKeyLen    = 1024
)

// Validate checks c and fills in missing event ids of its appends, like
// AppendParams.Validate (so backends clone the appends' Events first). Every
// backend calls it before writing anything; it returns a *ValidationError
// (ErrInvalid) whose fields are named "appends[i].<field>" and "ops[i].<field>".
//
// An op must do exactly one thing: set (Value != nil, which may be empty),
// Delete, or DeletePrefix. Bucket is 1..MaxStateBucketLen bytes of UTF-8
// without NUL; Key is 1..MaxStateKeyLen bytes, except that a DeletePrefix key
// may be empty (every key of the bucket). New is only for sets.
func (c *StateCommit) Validate() error {
	v := &ValidationError{}
	for i := range c.Appends {
		if err := c.Appends[i].Validate(); err != nil {
			ve, ok := err.(*ValidationError)
			if !ok {
				return err
			}
			for f, msg := range ve.Fields {
				v.add(fmt.Sprintf("appends[%d].%s", i, f), "%s", msg)
			}
		}
	}
	okBucket := "" // the last bucket found valid: commits use a few buckets over and over
	for i, op := range c.Ops {
		f := func(name string) string { return fmt.Sprintf("ops[%d].%s", i, name) }
		switch {
		case op.Bucket == okBucket && op.Bucket != "":
		case op.Bucket == "":
			v.add(f("bucket"), "is required")
		case len(op.Bucket) > MaxStateBucketLen:
			v.add(f("bucket"), "at most %d bytes, got %d", MaxStateBucketLen, len(op.Bucket))
		case !utf8.ValidString(op.Bucket) || strings.IndexByte(op.Bucket, 0) >= 0:
			v.add(f("bucket"), "must be UTF-8 without NUL")
		default:
			okBucket = op.Bucket
		}
		switch {
		case len(op.Key) > MaxStateKeyLen:
			v.add(f("key"), "at most %d bytes, got %d", MaxStateKeyLen, len(op.Key))
		case len(op.Key) == 0 && !op.DeletePrefix:
			v.add(f("key"), "is required")
		}
		switch {
		case op.Delete && op.DeletePrefix:
			v.add(fmt.Sprintf("ops[%d]", i), "set only one of delete and delete_prefix")
		case (op.Delete || op.DeletePrefix) && op.Value != nil:
			v.add(f("value"), "must be nil when deleting")
		case !op.Delete && !op.DeletePrefix && op.Value == nil:
			v.add(f("value"), "is required (use an empty, non-nil slice for no value)")
		case op.New && (op.Delete || op.DeletePrefix):
			v.add(f("new"), "applies to sets only")
		}
	}
	return v.orNil()
}
