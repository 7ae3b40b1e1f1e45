package httpapi

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"
)

// GetAllocations asks the HTTP API of the server listening on listen
// (http.listen, as config.Load validated it) for the allocation table
// (GET /v1/allocations): the client of the allocations command.
func GetAllocations(listen string) ([]Allocation, error) {
	host, port, _ := net.SplitHostPort(listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/v1/allocations"
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, fmt.Errorf("its HTTP API does not answer: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var views []Allocation
	if err := json.NewDecoder(resp.Body).Decode(&views); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return views, nil
}
