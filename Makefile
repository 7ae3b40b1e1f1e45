# cloudstack-pd: build, run and test. `make help` lists the targets.

GO       ?= go
BIN      := bin/cloudstack-pd
# Fuzz time per target for `make fuzz`.
FUZZTIME ?= 20s

.PHONY: help build run test deb deb-check fuzz bench flood clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build bin/cloudstack-pd
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/cloudstack-pd

run: build ## import example/kea-dhcp6.conf, then serve example/ on [::1]:10547
	mkdir -p run
	$(BIN) import-kea --config example/cloudstack-pd.yaml example/kea-dhcp6.conf
	exec $(BIN) serve --config example/cloudstack-pd.yaml

# CLOUDSTACK_PD_E2E=1 makes the end-to-end tests fail, not skip, when a tool
# or root is missing: in CI a skipped test must not pass for a run one.
test: ## install missing test tools, then gofmt, go vet, go test and the package check
	bash .ci/install-deps
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CLOUDSTACK_PD_E2E=1 $(GO) test -count=1 -timeout 15m ./...
	CLOUDSTACK_PD_E2E=1 bash .ci/deb-check

# Settings: DEB_VERSION, DEB_MAINTAINER, DEB_LICENSE, DEB_OUT; see .ci/deb.
deb: ## build the Debian package bin/cloudstack-pd_<version>_<arch>.deb (dpkg-deb)
	bash .ci/deb

# Root only: installs the package on this machine, checks it, purges it.
deb-check: ## build, lintian, dpkg -i, check the installed package, dpkg --purge
	bash .ci/deb-check

fuzz: ## run every Fuzz target for FUZZTIME (default 20s) each
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
		dir=$$(dirname $$f); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "== $$dir $$t"; \
			$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$dir; \
		done; \
	done

# Not part of `test`: it takes minutes and its numbers are measurements,
# never assertions. Settings: BENCH_* variables, see .ci/bench.
bench: ## measure against Kea 2.2 (needs kea-dhcp6), Go benchmarks; updates docs/BENCHMARKS.md
	bash .ci/bench

# Not part of `test` either: 20 s of Rebinds and Rapid Commit Solicits with
# random client DUIDs against a real serve on [::1]; it fails when serve's
# peak RSS reaches 400 MB or answers stop. Settings: CLOUDSTACK_PD_FLOOD_*
# variables, see bench/flood_test.go.
flood: ## flood serve with random DUIDs for known MACs; report its peak RSS
	CLOUDSTACK_PD_FLOOD=1 $(GO) test -run '^TestFloodServe$$' -count=1 -v -timeout 10m ./bench/

clean: ## remove bin/
	rm -rf bin
