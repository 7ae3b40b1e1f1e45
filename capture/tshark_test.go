package capture

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// tsharkFields runs tshark on file and returns one line per frame of the
// fields asked for, tab-separated, repeated values joined by commas.
func tsharkFields(t *testing.T, file, filter string, fields ...string) []string {
	t.Helper()
	args := []string{"-r", file, "-n", "-o", "udp.check_checksum:TRUE", "-T", "fields",
		"-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"}
	if filter != "" {
		args = append(args, "-Y", filter)
	}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command(testenv.Tool(t, "tshark"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	s := strings.TrimRight(string(out), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// tshark, an independent decoder, finds the same DHCPv6 messages as Read
// in the shared real captures and in every synthetic link type.
func TestReadAgreesWithTshark(t *testing.T) {
	testenv.Tool(t, "tshark")
	type file struct{ name, path string }
	var files []file
	if dir := testenv.FindSharedCaptures(); dir != "" {
		names, _ := filepath.Glob(filepath.Join(dir, "*.pcap"))
		for _, n := range names {
			files = append(files, file{"shared/" + filepath.Base(n), n})
		}
	} else {
		t.Run("shared", func(t *testing.T) { testenv.SharedCaptures(t) }) // skips, or fails in CI
	}
	tmp := t.TempDir()
	for i, c := range linkTypeCases(t) {
		p := filepath.Join(tmp, fmt.Sprintf("%02d.pcap", i))
		if err := os.WriteFile(p, c.file, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, file{c.name, p})
	}
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			// DHCPv6 over IPv6 only: tshark also dissects port 547 over IPv4.
			lines := tsharkFields(t, f.path, "ipv6 && (udp.port == 546 || udp.port == 547) && !icmpv6",
				"frame.number", "ipv6.src", "udp.srcport", "ipv6.dst", "udp.dstport", "udp.payload")
			pkts, _, err := ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range pkts {
				got = append(got, fmt.Sprintf("%d\t%s\t%d\t%s\t%d\t%x", p.Index, p.Src.Addr(), p.Src.Port(), p.Dst.Addr(), p.Dst.Port(), p.Payload))
			}
			if strings.Join(got, "\n") != strings.Join(lines, "\n") {
				t.Errorf("Read found:\n%s\ntshark found:\n%s", strings.Join(got, "\n"), strings.Join(lines, "\n"))
			}
		})
	}
}

// tshark dissects what Writer writes as IPv6 and UDP with a good checksum,
// and nothing in it as malformed.
func TestWriterTshark(t *testing.T) {
	testenv.Tool(t, "tshark")
	path := filepath.Join(t.TempDir(), "w.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	msgs := [][]byte{relayed(), relayed()[:98], bytes.Repeat([]byte{0xab}, 1501)}
	for i, m := range msgs {
		if err := w.WritePacket(when.Add(time.Duration(i)*time.Millisecond), relayAP, serverAP, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// The third payload is not DHCPv6 (type 0xab is unknown): only IPv6
	// and UDP are judged for it.
	lines := tsharkFields(t, path, "", "frame.number", "frame.time_epoch", "ipv6.plen", "udp.length", "udp.checksum.status", "_ws.malformed")
	want := []string{
		fmt.Sprintf("1\t%d.123456000\t106\t106\t1\t", when.Unix()),
		fmt.Sprintf("2\t%d.124456000\t106\t106\t1\t", when.Unix()),
		fmt.Sprintf("3\t%d.125456000\t1509\t1509\t1\t", when.Unix()),
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("tshark (frame, time, IPv6 payload length, UDP length, checksum status 1=good, malformed):\n%s\nwant:\n%s",
			strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
