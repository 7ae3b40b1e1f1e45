package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenMan: a page per command, each a man page of section 1 dated as
// asked and naming its command; the hidden gen-man itself has none.
func TestGenMan(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man1")
	if out, err := runCLI(t, "gen-man", "--dir", dir, "--date", "2026-03-01"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, c := range newRootCmd().Commands() {
		page := filepath.Join(dir, "cloudstack-pd-"+c.Name()+".1")
		b, err := os.ReadFile(page)
		if c.Hidden || c.Name() == "help" {
			if err == nil {
				t.Errorf("%s: a page for a hidden command", page)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.Name(), err)
			continue
		}
		s := string(b)
		if !strings.HasPrefix(s, `.nh
.TH "CLOUDSTACK-PD" "1" "Mar 2026"`) || !strings.Contains(s, "cloudstack-pd-"+c.Name()+" - ") {
			t.Errorf("%s: not the man page of %s:\n%.300s", page, c.Name(), s)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "cloudstack-pd.1")); err != nil {
		t.Error(err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "nope")
	if _, err := runCLI(t, "gen-man", "--dir", dir); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: %v", err)
	}
}
