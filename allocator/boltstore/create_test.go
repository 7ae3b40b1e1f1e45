package boltstore

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestCreateStoreUndo: what Open creates it can remove again, the folders
// it made included, and nothing else; it never creates over an existing
// file, and leaves no temporary file.
func TestCreateStoreUndo(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "a", "b", "state.db")
	undo, err := createStore(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("folder holds %v, want state.db alone", entries)
	}
	s, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the created store does not open: %v", err)
	}
	s.Close()
	undo()
	for _, p := range []string{path, filepath.Join(base, "a")} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	if _, err := os.Stat(base); err != nil {
		t.Errorf("the folder that was there is gone: %v", err)
	}
	existing := filepath.Join(base, "state.db")
	if err := os.WriteFile(existing, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := createStore(existing, true); err == nil {
		t.Error("createStore over an existing file succeeded")
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "x" {
		t.Errorf("existing file now %q, %v", b, err)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 1 {
		t.Errorf("folder holds %v, want the existing file alone", entries)
	}

	// Discard removes a store Open created, and only closes one it did not.
	s, err = Open(path, Options{Create: true, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Created() {
		t.Error("Created() = false for a new store")
	}
	_ = s.Discard()
	if _, err := os.Stat(filepath.Join(base, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Discard left %v", err)
	}
	s, err = Open(path, Options{Create: true, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path, Options{Create: true, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Created() {
		t.Error("Created() = true for an existing store")
	}
	_ = s.Discard()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("Discard removed a store it had not created: %v", err)
	}
}
