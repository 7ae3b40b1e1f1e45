package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	stamped := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261206074510-6132c1fabc12+dirty"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "6132c1fabc12"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tt := range []struct {
		name    string
		bi      *debug.BuildInfo
		version string
		want    Info
	}{
		{"stamped by go build in a checkout", stamped, "",
			Info{Version: "v0.0.0-20261206074510-6132c1fabc12+dirty", Revision: "6132c1fabc12", Modified: true, GoVersion: "go1.26.8"}},
		{"a release set at link time wins", stamped, "v1.2.3",
			Info{Version: "v1.2.3", Revision: "6132c1fabc12", Modified: true, GoVersion: "go1.26.8"}},
		{"(devel) is no version", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "",
			Info{Version: "unknown", Revision: "unknown", GoVersion: "go1.26.8"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := fromBuildInfo(tt.bi, tt.version); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	s := fromBuildInfo(stamped, "").String()
	for _, w := range []string{"v0.0.0-20261206074510-6132c1fabc12+dirty", "revision 6132c1fabc12+modified", "go1.26.8"} {
		if !strings.Contains(s, w) {
			t.Errorf("String() = %q, want %q in it", s, w)
		}
	}
}
