package webhook

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Event is one CloudStack event, as a delivery carries it.
type Event struct {
	// ID is the delivery's X-CS-Event-ID ("" when absent).
	ID string
	// Type is the event type, e.g. VM.CREATE: the body's event, else
	// the X-CS-Event header.
	Type string
	// Status, Entity, EntityUUID, Account, Description and DateTime are
	// the body's status, entity, entityuuid, account, description and
	// eventDateTime, as sent.
	Status, Entity, EntityUUID, Account, Description, DateTime string
	// Received is when the delivery arrived.
	Received time.Time
	// Action is what the event asks for; VMID the VM to sync for
	// SyncVM.
	Action Action
	VMID   string
}

// Action is what an event asks of the sync.
type Action int

const (
	// Ignore: the event cannot change which NICs exist.
	Ignore Action = iota
	// SyncVM: sync the VM Event.VMID (a targeted sync).
	SyncVM
	// SyncAll: a full sync (the event names no VM, or concerns many).
	SyncAll
)

func (a Action) String() string {
	switch a {
	case SyncVM:
		return "sync-vm"
	case SyncAll:
		return "sync-all"
	}
	return "ignore"
}

// The event types acted on.
var (
	vmEvents      = []string{"VM.CREATE", "VM.START", "VM.DESTROY", "VM.EXPUNGE", "VM.MIGRATE", "VM.RECOVER"}
	nicEvents     = []string{"NIC.CREATE", "NIC.DELETE", "NIC.UPDATE"}
	networkEvents = []string{"NETWORK.UPDATE", "NETWORK.MIGRATE"}
)

// EventTypes lists the event types acted on, the values of the event
// label of cloudstack_pd_webhook_deliveries_total besides "other".
func EventTypes() []string {
	return append(append(append([]string(nil), vmEvents...), nicEvents...), networkEvents...)
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// eventLabel is the event label of a delivery: its type when acted on,
// else "other" (the header is the sender's word: the label set stays
// bounded).
func eventLabel(typ string) string {
	if has(vmEvents, typ) || has(nicEvents, typ) || has(networkEvents, typ) {
		return typ
	}
	return "other"
}

// body is the JSON of a delivery; CloudStack sends more fields.
type body struct {
	Event       string `json:"event"`
	Status      string `json:"status"`
	Entity      string `json:"entity"`
	EntityUUID  string `json:"entityuuid"`
	Description string `json:"description"`
	Account     string `json:"account"`
	DateTime    string `json:"eventDateTime"`
}

// ParseEvent reads a delivery's body; id and header are its X-CS-Event-ID
// and X-CS-Event. It sets Action and VMID (Classify). A body that is not a
// JSON object, or whose fields above are not strings, is an error.
func ParseEvent(raw []byte, id, header string, received time.Time) (Event, error) {
	var b body
	if err := json.Unmarshal(raw, &b); err != nil {
		return Event{}, fmt.Errorf("webhook: event body: %w", err)
	}
	e := Event{ID: id, Type: strings.TrimSpace(b.Event), Status: b.Status, Entity: b.Entity, EntityUUID: strings.TrimSpace(b.EntityUUID),
		Account: b.Account, Description: b.Description, DateTime: b.DateTime, Received: received}
	if e.Type == "" {
		e.Type = strings.TrimSpace(header)
	}
	e.Type = strings.ToUpper(e.Type)
	e.Action, e.VMID = Classify(e.Type, e.Entity, e.EntityUUID)
	return e, nil
}

// Classify says what an event of type typ about entity (its uuid)
// asks for; see the package doc.
func Classify(typ, entity, uuid string) (Action, string) {
	vmEntity := uuid != "" && (entity == "" || strings.EqualFold(entity, "VirtualMachine") || strings.EqualFold(entity, "VM"))
	switch {
	case has(vmEvents, typ) && uuid != "":
		return SyncVM, uuid
	case has(vmEvents, typ):
		return SyncAll, ""
	case has(nicEvents, typ) && vmEntity:
		return SyncVM, uuid
	case has(nicEvents, typ), has(networkEvents, typ):
		return SyncAll, ""
	}
	return Ignore, ""
}
