package state

import "encoding/json"

// AppStatus is what an applier reported for one app.
type AppStatus struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"` // compose or helm
	Outcome string `json:"outcome"`
	Message string `json:"message,omitempty"`
	// Detail is applier-specific (services and health, release status...).
	Detail json.RawMessage `json:"detail,omitempty"`
}
