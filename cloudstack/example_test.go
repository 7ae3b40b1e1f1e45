package cloudstack_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

// List a pod's NICs and pick those that qualify for a mapping entry with
// vlan: 2701, leaving out VMs that may not get a new prefix.
func Example() {
	const pod = "77828509-4043-40bc-8756-7745c8ec7a99"
	fake := cloudstacktest.NewServer("api-key", "secret-key")
	defer fake.Close()
	vms, err := cloudstacktest.LoadVMs("../testdata/cloudstack/listVirtualMachines-pod.json")
	if err != nil {
		panic(err)
	}
	fake.SetPod(pod, vms)

	c := cloudstack.New(fake.URL, "api-key", "secret-key", cloudstack.Options{PageSize: 3})
	nics, err := c.ListPodNICs(context.Background(), pod)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, n := range allocator.SelectNICs(nics, 2701) {
		fmt.Println(n.VMName, n.VMState, n.MAC, n.IP6, allocator.Eligible(n.VMState))
	}
	// Output:
	// web-01 Running 1e:00:5d:00:01:7a 2001:db8:100:0:1c00:5dff:fe00:17a true
	// db-01 Running 1e:00:a2:00:02:11 2001:db8:100:0:1c00:a2ff:fe00:211 true
	// build-07 Stopped 1e:00:13:00:07:01 2001:db8:100:0:1c00:13ff:fe00:701 true
	// old-02 Destroyed 1e:00:0b:00:02:02 2001:db8:100:0:1c00:bff:fe00:202 false
	// vnf-fw-01 Running 1e:00:fa:00:00:01 2001:db8:100:0:1c00:faff:fe00:1 true
	// gone-05 Expunging 1e:00:0b:00:05:05 2001:db8:100:0:1c00:bff:fe00:505 false
}

// Any failure aborts the whole listing; CloudStack's own errors come as
// *APIError.
func ExampleClient_ListPodNICs_error() {
	const pod = "77828509-4043-40bc-8756-7745c8ec7a99"
	fake := cloudstacktest.NewServer("api-key", "secret-key")
	defer fake.Close()
	fake.SetPods(map[string]cloudstacktest.Pod{pod: cloudstacktest.Synthetic{N: 1200}})
	fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultInternal, Page: 2})

	c := cloudstack.New(fake.URL, "api-key", "secret-key", cloudstack.Options{Logger: slog.New(slog.DiscardHandler)})
	nics, err := c.ListPodNICs(context.Background(), pod)
	var apiErr *cloudstack.APIError
	if errors.As(err, &apiErr) {
		fmt.Println(len(nics), apiErr.Code, apiErr.CSCode)
	}
	fmt.Println(err)
	// Output:
	// 0 530 9999
	// cloudstack: pod 77828509-4043-40bc-8756-7745c8ec7a99: listVirtualMachines page 2: CloudStack error 530 (cserrorcode 9999): Internal error executing command, please contact your system administrator
}
