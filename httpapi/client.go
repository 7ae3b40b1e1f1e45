package httpapi

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// GetAllocations asks the HTTP API of the server listening on listen
// (http.listen, as config.Load validated it) for the whole allocation
// table (GET /v1/allocations, page after page). It holds the whole table
// in memory: to go through a large one, use EachAllocation.
func GetAllocations(listen string) ([]Allocation, error) {
	var views []Allocation
	err := EachAllocation(listen, func(a Allocation) error {
		views = append(views, a)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return views, nil
}

// EachAllocation calls fn with each allocation the server listening on
// listen serves at GET /v1/allocations, in its order (pool, then prefix),
// fetching pages of MaxLimit and following their next cursors, so that
// it holds one page at a time: the client of the allocations command. It
// stops at fn's first error, which it returns.
func EachAllocation(listen string, fn func(Allocation) error) error {
	host, port, _ := net.SplitHostPort(listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	base := "http://" + net.JoinHostPort(host, port) + "/v1/allocations"
	c := &http.Client{Timeout: 30 * time.Second}
	after := ""
	for {
		u := base + "?limit=" + strconv.Itoa(MaxLimit)
		if after != "" {
			u += "&after=" + url.QueryEscape(after)
		}
		page, err := getPage[Allocation](c, base, u)
		if err != nil {
			return err
		}
		for _, a := range page.Items {
			if err := fn(a); err != nil {
				return err
			}
		}
		if page.Next == nil || *page.Next == "" {
			return nil
		}
		if *page.Next == after {
			return fmt.Errorf("GET %s: the server gave the same next cursor twice", base)
		}
		after = *page.Next
	}
}

// getPage reads one page from u; errors name base, the endpoint.
func getPage[T any](c *http.Client, base, u string) (*Page[T], error) {
	resp, err := c.Get(u)
	if err != nil {
		return nil, fmt.Errorf("its HTTP API does not answer: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, fmt.Errorf("GET %s: %s: %s", base, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("GET %s: %s", base, resp.Status)
	}
	var page Page[T]
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, fmt.Errorf("GET %s: %w", base, err)
	}
	return &page, nil
}
