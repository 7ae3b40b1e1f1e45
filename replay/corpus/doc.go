// Package corpus builds the test corpus of `cloudstack-pd replay`: the
// synthetic captures in testdata/replay, the Kea config that reserves
// their VMs' prefixes, the cloudstack-pd config that serves the same
// pools, and testdata/replay/README.md, which lists every frame.
//
// Everything is generated from one table (site.go) by code that writes
// the bytes a Juniper MX relay, a Kea server and a capture tool would
// write, so that the captures, the reservations and the description never
// disagree. The output is deterministic: fixed timestamps, transaction ids
// and DUIDs. Regenerate it after changing this package with
//
//	go test ./replay/corpus -run TestCorpus -update
//
// and then the golden answers with
//
//	go test ./cmd/cloudstack-pd -run TestReplayCorpusOffline -update-replay
//
// How the frames are built:
//
//   - Relay-Forwards in the Juniper shape (relay.go): hop-count 0,
//     link-address = the router's address on the VM's VLAN (the IRB's),
//     peer-address = the VM's EUI-64 link-local address, interface-id
//     naming the VLAN ("VLAN2701"), remote-id = enterprise 2636 + the VM's
//     MAC, and the client message (built with insomniacslk/dhcp) inside.
//     Variants change one thing each: an L2 relay's link-address ::, a
//     link-local link-address, a MAC written as text, no interface-id, a
//     foreign VLAN, two nested relays, malformed options.
//   - Malformed packets are written byte by byte (a relay message option
//     longer than the packet, a level without relay message, 33 nested
//     levels, a client option cut short, a remote-id of two bytes) and one
//     frame is cut by the snap length.
//   - Link layers: Ethernet from the router's MAC to the server's, as a
//     port mirror or a capture on the server's NIC shows them
//     (juniper-relay.pcap); Linux cooked v2 in pcapng, as
//     `tcpdump -i any -w` writes on the server (tcpdump-any.pcapng); and
//     client traffic on an 802.1Q trunk, one frame double-tagged
//     (802.1ad), as a mirror of the VMs' VLAN shows it before any relay
//     (unrelayed-trunk.pcap, replayed with --wrap).
//   - Packets carry IPv6 and UDP headers with correct lengths and
//     checksums (gopacket's serializer).
package corpus
