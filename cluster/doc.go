// Package cluster makes cloudstack-pd one of several servers sharing one
// table in etcd (docs/ha.md): it starts the embedded etcd member when the
// config asks for one and connects the etcd client (Start), elects the one
// server that syncs from CloudStack and fences its writes on that
// leadership (Elector, Lead), and publishes what each server has loaded so
// that `cluster status` can show every member, the syncer and each
// server's lag (Publish, ReadStatus).
//
// The table itself is kept by the etcd backend of the storage seam
// (allocator/etcdstore); this package knows nothing of its keys but the
// prefix they share.
package cluster
