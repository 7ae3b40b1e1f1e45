package main

import (
	"bytes"
	"strings"
	"testing"
)

// version and --version print the same line: the version, the revision
// and the Go version of this build.
func TestVersion(t *testing.T) {
	var outs []string
	for _, args := range [][]string{{"version"}, {"--version"}} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		s := out.String()
		if !strings.HasPrefix(s, "cloudstack-pd ") || !strings.Contains(s, "(revision ") || !strings.Contains(s, "go1.") {
			t.Errorf("%v printed %q", args, s)
		}
		outs = append(outs, s)
	}
	if outs[0] != outs[1] {
		t.Errorf("version %q and --version %q differ", outs[0], outs[1])
	}
}
