package corpus

import (
	"bytes"
	"flag"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/kea"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the generated files of testdata/replay")

// Dir is testdata/replay, from this package's folder.
const Dir = "../../testdata/replay"

// The files in testdata/replay are what the generator writes now: a
// change to the generator must come with its output (-update).
func TestCorpusUpToDate(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		path := filepath.Join(Dir, name)
		testenv.Golden(t, path, files[name], *update, "update")
	}
}

// The generator is deterministic: two runs give the same bytes.
func TestCorpusDeterministic(t *testing.T) {
	a, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for n := range a {
		if !bytes.Equal(a[n], b[n]) {
			t.Errorf("%s: two runs differ", n)
		}
	}
}

// Every capture reads back with capture, frame for frame, with
// exactly the malformed frames the corpus means to have.
func TestCorpusCapturesRead(t *testing.T) {
	caps, err := Captures()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range caps {
		t.Run(c.Name, func(t *testing.T) {
			pkts, st, err := capture.Read(bytes.NewReader(c.Data))
			if err != nil {
				t.Fatal(err)
			}
			if st.Frames != len(c.Frames) {
				t.Errorf("%d frames read, %d described", st.Frames, len(c.Frames))
			}
			wantMalformed, wantSkipped := 0, 0
			for _, w := range c.Frames {
				switch {
				case bytes.HasPrefix([]byte(w), []byte("malformed frame")):
					wantMalformed++
				case bytes.Contains([]byte(w), []byte("not DHCPv6")):
					wantSkipped++
				}
			}
			if st.Malformed != wantMalformed || st.Skipped != wantSkipped {
				t.Errorf("malformed %d (%v), skipped %d; want %d and %d", st.Malformed, st.Errors, st.Skipped, wantMalformed, wantSkipped)
			}
			if len(pkts) != len(c.Frames)-wantMalformed-wantSkipped {
				t.Errorf("%d DHCPv6 messages", len(pkts))
			}
			for _, p := range pkts {
				if p.SrcMAC == nil {
					t.Errorf("frame %d: no source MAC", p.Index)
				}
			}
		})
	}
}

// The Kea config parses, and reserves exactly the VMs with a pool.
func TestCorpusKeaConfig(t *testing.T) {
	data, err := KeaConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := kea.Parse("corpus.kea.conf", data)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range cfg.Subnets {
		for _, r := range s.Reservations {
			m, err := r.MAC()
			if err != nil {
				t.Fatal(err)
			}
			got[m.String()] = s.InterfaceID + " " + r.Prefixes[0]
		}
	}
	for _, v := range reservedMACs() {
		var p Pool
		for _, q := range Pools {
			if q.Name == v.Pool {
				p = q
			}
		}
		if want := p.InterfaceID + " " + v.Prefix.String(); got[v.MAC.String()] != want {
			t.Errorf("%s: reserved %q, want %q", v.Name, got[v.MAC.String()], want)
		}
		delete(got, v.MAC.String())
	}
	if len(got) > 0 {
		t.Errorf("reservations of no VM: %v", got)
	}
}
