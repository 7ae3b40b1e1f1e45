// Package buildinfo says which build of cloudstack-pd runs: its version
// (set at link time, else the module version Go stamps from the VCS, such
// as v0.0.0-20261206074510-6132c1fabc12+dirty), the VCS revision and
// whether the tree was modified, and the Go version. The CLI's --version and
// version command, serve's start-up line, the HTTP API's / and
// cloudstack_pd_build_info all show the same Info.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info describes a build.
type Info struct {
	// Version is the release, or the module's pseudo-version; "unknown"
	// when neither is known.
	Version string
	// Revision is the VCS revision built; "unknown" when not stamped
	// (go build -buildvcs=false, or outside a checkout).
	Revision string
	// Modified says the checkout had uncommitted changes.
	Modified bool
	// GoVersion is the Go toolchain's version.
	GoVersion string
}

// Get returns the running binary's Info; version, when not empty, is the
// release set at link time (-ldflags "-X main.version=v1.2.3").
func Get(version string) Info {
	bi, _ := debug.ReadBuildInfo()
	return fromBuildInfo(bi, version)
}

func fromBuildInfo(bi *debug.BuildInfo, version string) Info {
	in := Info{Version: version, Revision: "unknown", GoVersion: runtime.Version()}
	if bi != nil {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if s.Value != "" {
					in.Revision = s.Value
				}
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
	}
	if in.Version == "" {
		in.Version = "unknown"
	}
	return in
}

// String is the one-line form: version, revision (with "+modified") and
// Go version.
func (in Info) String() string {
	rev := in.Revision
	if in.Modified {
		rev += "+modified"
	}
	return fmt.Sprintf("cloudstack-pd %s (revision %s, %s)", in.Version, rev, in.GoVersion)
}
