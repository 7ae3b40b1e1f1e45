// Package httpapi is cloudstack-pd's local HTTP side: Prometheus metrics,
// health and readiness probes, and a read-only JSON view of the pools, the
// allocation table and the recorded bindings. It never changes anything and
// never touches the packet path: every number is computed when it is asked
// for, from the table snapshot in force (allocator.Reader) and the store.
//
// # Endpoints
//
// Only GET and HEAD are served; any other method gets 405 with an Allow
// header. Every error body is JSON: {"error": "…"}, plus "parameter" when a
// query parameter is at fault (400). An unknown query parameter, an empty
// one, or one given twice is a 400 naming it, so a typo never widens a
// query silently.
//
//	GET /healthz            200 "ok" while the process runs (liveness)
//	GET /readyz             200 when listening and the table is loaded, else 503 (ReadyStatus)
//	GET /metrics            Prometheus text exposition of the registry
//	GET /v1/pools           []Pool
//	GET /v1/allocations     Page[Allocation]; filters mac, pool, vm, state, prefix; limit, after
//	GET /v1/leases          Page[Lease]; filters mac, pool, prefix; limit, after
//	GET /                   an index: name, version, endpoints, parameters, example queries
//
// /readyz never turns not-ready because CloudStack is unreachable: the
// server keeps answering from its stored table, so a stale sync is reported
// in "warnings" only.
//
// # Pages
//
// /v1/allocations and /v1/leases answer one page at a time:
//
//	{"items": [ … ], "next": "YQEgAQ…"}
//
// limit is the most items a page holds (DefaultLimit, 1,000, when not
// given; at most MaxLimit, 10,000); after is the next cursor of the page
// before, passed back unchanged; next is null on the last page, and only
// there (a full page is followed by at least one more item). A cursor is
// a place in the listing's order, not a record: a page after a change of
// the table starts after that place, with nothing repeated; what was added
// before it is not shown. A cursor that is not of this listing is a 400
// naming after.
//
// /v1/allocations is ordered by pool (mapping key, byte order), then
// prefix; /v1/leases by binding key: the client DUID's length, the DUID,
// then the IAID. An allocation page is encoded straight from the table in
// force into the response (its order is computed once per table, 4 bytes
// per allocation): a full listing of a million allocations adds some
// 17 MB to serve's peak RSS (docs/BENCHMARKS.md). A lease page is read
// from the store in one read transaction and written when complete.
//
// Filters combine with AND. mac takes any common notation
// (06:32:b2:00:04:79, 06-32-B2-00-04-79, 0632.b200.0479, 0632b2000479);
// pool is a mapping key (pod UUID) and must be configured; vm matches the
// CloudStack VM id exactly or its name without regard to case; state is
// active, gone or quarantined; prefix is a delegated prefix such as
// 2001:db8:200::/60.
//
// # JSON field names
//
// Field names are kebab-case and stable; new fields may be added, none is
// renamed or removed without a new /v2 path. Every field is always present:
// unknown strings are "", unknown times null. Times are RFC 3339 in UTC.
// Byte strings (DUIDs, remote-id, relay-id) are colon-separated lower-case
// hex, as Kea prints DUIDs and as the store keeps them; an interface-id is
// shown as text when it is printable ASCII and as 0x-prefixed hex
// otherwise, as the server's logs show it.
//
//	/v1/pools:
//	[{"name": "77828509-…", "prefix": "2001:db8:200::/40", "prefix-len": 60,
//	  "interface-id": "VLAN2701", "ip6-cidr": "2001:db8:100::/64",
//	  "size": 1048576, "free": 1048573,
//	  "counts": {"active": 2, "gone": 1, "quarantined": 0}}]
//
//	/v1/allocations (items: the fields of `cloudstack-pd allocations --json`):
//	[{"mac": "06:32:b2:00:04:79", "prefix": "2001:db8:200::/60",
//	  "pool": "77828509-…", "interface-id": "VLAN2701",
//	  "vm-id": "…", "vm-name": "web-1", "nic-id": "…", "state": "active",
//	  "since": "2026-01-02T03:04:05Z", "gone-at": null, "quarantined-at": null,
//	  "ip6": "2001:db8:100:0:432:b2ff:fe00:479", "source": "sync"}]
//
//	/v1/leases (items):
//	[{"client-duid": "00:03:00:01:06:32:b2:00:04:79", "iaid": 1,
//	  "mac": "06:32:b2:00:04:79", "pool": "77828509-…", "prefix": "2001:db8:200::/60",
//	  "preferred-lifetime": 86400, "valid-lifetime": 172800,
//	  "expires": "…", "expired": false, "last-exchange": "…", "last-message": "REQUEST",
//	  "relay-source": "[2001:db8:ffff::1]:547", "link-address": "2001:db8:100::1",
//	  "peer-address": "fe80::432:b2ff:fe00:479", "interface-id": "VLAN2701",
//	  "remote-id": "00:00:0a:4c:06:32:b2:00:04:79", "relay-id": ""}]
//
//	/readyz:
//	{"ready": true, "listening": ["[2001:db8::100:69]:547"], "table-loaded": true,
//	 "pools": 2, "allocations": 1234, "last-sync": "2026-…Z",
//	 "warnings": ["sync stale: last success 2h0m0s ago"]}
//
// # Metrics
//
// server.NewMetrics registers the packet path's counters; NewCollectors
// adds, computed at scrape time, the per-pool gauges, the store's file size,
// build info and the Go and process collectors; NewSyncMetrics the
// CloudStack sync's. All share the cloudstack_pd namespace. docs/operations.md
// explains each one and docs/alerts.yml alerts on them.
//
// # Caveats
//
//   - The API has no authentication: listen on loopback (the default,
//     127.0.0.1:9547) or behind something that authenticates. It shows MACs,
//     VM names and DUIDs, never a secret.
//   - A /v1/leases page with a filter reads bindings until its page is
//     full: on a very large store, a filter that matches few (mac, prefix)
//     walks every binding, in one read transaction per page.
package httpapi
