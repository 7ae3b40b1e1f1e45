package cloudstacktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// A Pod is what the fake lists for one pod: VMs in listing order, each
// produced as the JSON object listVirtualMachines carries for it. A Pod
// must not change once handed to the server (the server replaces it
// instead, see FaultExpunge).
type Pod interface {
	// Len is the number of VMs.
	Len() int
	// AppendVM appends the JSON object of VM i, 0 ≤ i < Len(), to dst.
	AppendVM(dst []byte, i int) []byte
}

// VMs is a Pod of literal JSON objects, e.g. read from a fixture by LoadVMs.
type VMs []json.RawMessage

// Len implements Pod.
func (v VMs) Len() int { return len(v) }

// AppendVM implements Pod.
func (v VMs) AppendVM(dst []byte, i int) []byte { return append(dst, v[i]...) }

// LoadVMs reads a fixture holding a listVirtualMachines answer,
// {"listvirtualmachinesresponse":{"count":N,"virtualmachine":[…]}} or the
// empty {"listvirtualmachinesresponse":{}}, and returns its VMs, each
// compacted to one line as the real server sends it.
func LoadVMs(path string) (VMs, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env struct {
		R *struct {
			Count int  `json:"count"`
			VMs   VMs  `json:"virtualmachine"`
			Code  *int `json:"errorcode"`
		} `json:"listvirtualmachinesresponse"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case env.R == nil:
		return nil, fmt.Errorf("%s: no listvirtualmachinesresponse", path)
	case env.R.Code != nil:
		return nil, fmt.Errorf("%s: an error answer, not a listing", path)
	case env.R.Count != len(env.R.VMs):
		return nil, fmt.Errorf("%s: count %d but %d VMs", path, env.R.Count, len(env.R.VMs))
	}
	// Real servers send each answer on one line.
	for i, vm := range env.R.VMs {
		var b bytes.Buffer
		if err := json.Compact(&b, vm); err != nil {
			return nil, fmt.Errorf("%s: VM %d: %w", path, i, err)
		}
		env.R.VMs[i] = b.Bytes()
	}
	return env.R.VMs, nil
}

// multiPod lists several pods one after the other: listVirtualMachines
// without podid.
type multiPod []Pod

func (m multiPod) Len() int {
	n := 0
	for _, p := range m {
		n += p.Len()
	}
	return n
}

func (m multiPod) AppendVM(dst []byte, i int) []byte {
	for _, p := range m {
		if i < p.Len() {
			return p.AppendVM(dst, i)
		}
		i -= p.Len()
	}
	panic("cloudstacktest: VM index out of range")
}

// expunged is a pod whose first VM is gone.
type expunged struct{ Pod }

func (e expunged) Len() int                          { return e.Pod.Len() - 1 }
func (e expunged) AppendVM(dst []byte, i int) []byte { return e.Pod.AppendVM(dst, i+1) }

// Synthetic is a generated pod of N VMs for benchmarks: nothing is stored
// per VM, each VM's JSON is built when a page is served, with the fields
// and size (about 2 KB) of a real answer. Everything is deterministic:
//
//   - the pod's id is SyntheticPodID(Index); VM i's id is SyntheticVMID;
//   - VM i's state is SyntheticState(i);
//   - VM i's first NIC is its default NIC: MAC SyntheticMAC(Index, i, 0),
//     broadcasturi vlan://(2700+Index), ip6address SyntheticIP6(Index, i);
//   - every tenth VM (i%10 == 9) has a second, non-default NIC: MAC
//     SyntheticMAC(Index, i, 1), vlan://(3000+Index), no IPv6.
//
// Index must be in 0–255 and N at most 1<<24, so that MACs stay unique.
type Synthetic struct {
	Index int
	N     int
}

// SyntheticPods spreads vms synthetic VMs over pods pods (the first pods
// get one more when vms does not divide evenly), keyed by SyntheticPodID.
func SyntheticPods(pods, vms int) map[string]Pod {
	m := make(map[string]Pod, pods)
	for k := range pods {
		n := vms / pods
		if k < vms%pods {
			n++
		}
		m[SyntheticPodID(k)] = Synthetic{Index: k, N: n}
	}
	return m
}

// SyntheticPodID is the UUID of synthetic pod k.
func SyntheticPodID(k int) string {
	return string(appendHex([]byte("5ca1ab1e-0000-4000-8000-"), uint64(k), 12))
}

// SyntheticVMID is the UUID of VM i of synthetic pod k.
func SyntheticVMID(k, i int) string { return string(appendVMID(nil, k, i)) }

// SyntheticMAC is the MAC of NIC nic (0 or 1) of VM i of synthetic pod k:
// 02:00:kk:ii:ii:ii for the first NIC, 06:00:… for the second (both locally
// administered unicast).
func SyntheticMAC(k, i, nic int) net.HardwareAddr {
	return net.HardwareAddr{0x02 | byte(nic)<<2, 0, byte(k), byte(i >> 16), byte(i >> 8), byte(i)}
}

// SyntheticIP6 is the IPv6 address of the first NIC of VM i of synthetic
// pod k: 2001:db8:x::(i+16) with x = 0x64+k (2001:db8:64::10 for VM 0 of
// pod 0), in the NIC's ip6cidr 2001:db8:x::/64.
func SyntheticIP6(k, i int) netip.Addr {
	x := 100 + k
	v := i + 16
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(x >> 8), byte(x), 12: byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// SyntheticState is the state of synthetic VM i: Destroyed for i%1000 ==
// 999, Stopped for i%100 == 42, Running otherwise.
func SyntheticState(i int) string {
	switch {
	case i%1000 == 999:
		return "Destroyed"
	case i%100 == 42:
		return "Stopped"
	}
	return "Running"
}

// Len implements Pod.
func (p Synthetic) Len() int { return p.N }

var syntheticEpoch = time.Date(2023, 3, 1, 8, 0, 0, 0, time.UTC)

// AppendVM implements Pod.
func (p Synthetic) AppendVM(b []byte, i int) []byte {
	k := p.Index
	b = append(b, `{"id":"`...)
	b = appendVMID(b, k, i)
	b = append(b, `","name":"vm-`...)
	b = strconv.AppendInt(b, int64(k), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","displayname":"Synthetic VM `...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","account":"tenant-`...)
	b = strconv.AppendInt(b, int64(i%97), 10)
	b = append(b, `","userid":"0b5e0c4a-8f3e-4f0e-9d55-3c1f2f7e2a10","username":"tenant","domainid":"4a8f3e52-1c2b-11ee-8c90-0242ac120002","domain":"ROOT","created":"`...)
	b = syntheticEpoch.Add(time.Duration(i)*time.Minute).AppendFormat(b, "2006-01-02T15:04:05-0700")
	b = append(b, `","state":"`...)
	b = append(b, SyntheticState(i)...)
	b = append(b, `","haenable":false,"zoneid":"9b2f4e61-5d1a-4c7e-a1f0-6f2c8d9e0b13","zonename":"zone-1","hostid":"c3d9e1f0-7a2b-4c5d-8e9f-0a1b2c3d4e5f","hostname":"kvm-`...)
	b = strconv.AppendInt(b, int64(k), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(i%40), 10)
	b = append(b, `","templateid":"7f3c2a1b-0e9d-4c8b-a7f6-5e4d3c2b1a09","templatename":"Ubuntu 22.04","templatedisplaytext":"Ubuntu 22.04 LTS (cloud-init)","passwordenabled":false,"serviceofferingid":"1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6","serviceofferingname":"Medium Instance","cpunumber":2,"cpuspeed":2000,"memory":4096,"cpuused":"3.42%","networkkbsread":123456,"networkkbswrite":65432,"diskkbsread":987654,"diskkbswrite":456789,"memorykbs":4194304,"memoryintfreekbs":1048576,"memorytargetkbs":4194304,"diskioread":1234,"diskiowrite":5678,"guestosid":"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d","rootdeviceid":0,"rootdevicetype":"ROOT","securitygroup":[],"nic":[`...)
	b = appendSyntheticNIC(b, k, i, 0)
	if i%10 == 9 {
		b = append(b, ',')
		b = appendSyntheticNIC(b, k, i, 1)
	}
	b = append(b, `],"hypervisor":"KVM","instancename":"i-2-`...)
	b = strconv.AppendInt(b, int64(k<<24|i), 10)
	b = append(b, `-VM","details":{"rootDiskController":"virtio","dataDiskController":"virtio","Message.ReservedCapacityFreed.Flag":"false"},"readonlydetails":"dataDiskController,rootDiskController","affinitygroup":[],"displayvm":true,"isdynamicallyscalable":false,"ostypeid":"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d","osdisplayname":"Ubuntu 22.04 LTS","tags":[],"lastupdated":"2024-05-06T07:08:09+0000","receivedbytes":1234567,"sentbytes":7654321,"deleteprotection":false,"arch":"x86_64","jobstatus":0}`...)
	return b
}

func appendSyntheticNIC(b []byte, k, i, nic int) []byte {
	vlan := 2700 + k
	if nic == 1 {
		vlan = 3000 + k
	}
	b = append(b, `{"id":"`...)
	b = appendHex(append(b, "0a1c"...), uint64(k<<1|nic), 4)
	b = appendHex(append(b, "-0000-4000-8000-"...), uint64(i), 12)
	b = append(b, `","networkid":"`...)
	b = appendHex(append(b, "0e7e0000-0000-4000-8000-"...), uint64(vlan), 12)
	b = append(b, `","networkname":"guest-vlan`...)
	b = strconv.AppendInt(b, int64(vlan), 10)
	b = append(b, `","netmask":"255.240.0.0","gateway":"10.`...)
	b = strconv.AppendInt(b, int64(k*2+nic), 10)
	b = append(b, `.0.1","ipaddress":"10.`...)
	b = strconv.AppendInt(b, int64(k*2+nic), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(i>>8&0xff), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(i&0xff), 10)
	b = append(b, `","isolationuri":"vlan://`...)
	b = strconv.AppendInt(b, int64(vlan), 10)
	b = append(b, `","broadcasturi":"vlan://`...)
	b = strconv.AppendInt(b, int64(vlan), 10)
	b = append(b, `","traffictype":"Guest","type":"Shared","isdefault":`...)
	b = strconv.AppendBool(b, nic == 0)
	b = append(b, `,"macaddress":"`...)
	for j, x := range SyntheticMAC(k, i, nic) {
		if j > 0 {
			b = append(b, ':')
		}
		b = appendHex(b, uint64(x), 2)
	}
	b = append(b, '"')
	if nic == 0 {
		b = append(b, `,"ip6gateway":"2001:db8:`...)
		b = strconv.AppendInt(b, int64(100+k), 16)
		b = append(b, `::1","ip6cidr":"2001:db8:`...)
		b = strconv.AppendInt(b, int64(100+k), 16)
		b = append(b, `::/64","ip6address":"`...)
		b = SyntheticIP6(k, i).AppendTo(b)
		b = append(b, '"')
	}
	b = append(b, `,"secondaryip":[],"extradhcpoption":[],"deviceid":"`...)
	b = strconv.AppendInt(b, int64(nic), 10)
	b = append(b, `","virtualmachineid":"`...)
	b = appendVMID(b, k, i)
	b = append(b, `","vlanid":`...)
	b = strconv.AppendInt(b, int64(vlan), 10)
	return append(b, '}')
}

func appendVMID(b []byte, k, i int) []byte {
	b = appendHex(append(b, "5e1f"...), uint64(k), 4)
	return appendHex(append(b, "-0000-4000-8000-"...), uint64(i), 12)
}

// appendHex appends v as width lower-case hex digits.
func appendHex(b []byte, v uint64, width int) []byte {
	const digits = "0123456789abcdef"
	for shift := (width - 1) * 4; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>uint(shift)&0xf])
	}
	return b
}

// AnotherVM returns a copy of vm (a VM's JSON object, as LoadVMs reads
// it) as another VM: its id, name and displayname replaced, and only its
// first NIC kept, with the id nicID and the MAC mac. Tests add it to a
// pod to play a VM just created.
func AnotherVM(vm json.RawMessage, id, name, nicID, mac string) (json.RawMessage, error) {
	var m map[string]any
	if err := json.Unmarshal(vm, &m); err != nil {
		return nil, err
	}
	nics, _ := m["nic"].([]any)
	if len(nics) == 0 {
		return nil, fmt.Errorf("VM %v has no NIC", m["id"])
	}
	nic, ok := nics[0].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("VM %v: NIC 0 is not an object", m["id"])
	}
	nic["id"], nic["macaddress"] = nicID, mac
	m["id"], m["name"], m["displayname"], m["nic"] = id, name, name, []any{nic}
	return json.Marshal(m)
}
