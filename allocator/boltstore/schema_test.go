package boltstore

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

func TestOpenRefusesOtherSchemas(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(tx *bolt.Tx) error
		want  error
	}{
		{"newer schema", func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			return b.Put(keySchema, []byte("2"))
		}, kv.ErrSchema},
		{"no schema key", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket(bucketMeta)
			return err
		}, kv.ErrSchema},
		{"foreign bbolt file", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("leases"))
			return err
		}, kv.ErrNotStore},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.setup); err != nil {
				t.Fatal(err)
			}
			db.Close()
			for _, ro := range []bool{false, true} {
				s, err := Open(path, Options{ReadOnly: ro})
				if err == nil {
					s.Close()
					t.Fatalf("Open(ReadOnly=%v) succeeded", ro)
				}
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), path) {
					t.Errorf("Open(ReadOnly=%v): %v, want %v naming the path", ro, err, tc.want)
				}
			}
		})
	}
}

// The fixture allocator/testdata/bbolt-no-buckets.db, which the command
// tests use for a bbolt file that is not a store, is one: a bbolt file
// without any bucket, which Open refuses with ErrNotStore.
func TestNoBucketsFixture(t *testing.T) {
	path := filepath.Join("..", "testdata", "bbolt-no-buckets.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func([]byte, *bolt.Bucket) error { n++; return nil })
	})
	db.Close()
	if err != nil || n != 0 {
		t.Fatalf("%d buckets, %v; want none", n, err)
	}
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, kv.ErrNotStore) {
		t.Errorf("Open = %v, want ErrNotStore", err)
	}
}
