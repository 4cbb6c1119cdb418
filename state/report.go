package state

import (
	"encoding/json"
	"time"
)

// AppStatus is what an applier reported for one app when it applied a
// revision; state.json records it with the revision.
type AppStatus struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"` // the applier: compose or helm
	Outcome string `json:"outcome"`
	Message string `json:"message,omitempty"`
	// View is what ran for the app once applied, in the words every
	// applier shares; nil when nothing was read.
	View *View `json:"view,omitempty"`
	// Detail is the applier's own account (services and health, release
	// status...), for scripts.
	Detail json.RawMessage `json:"detail,omitempty"`
}

// View is what runs for an app, in the words every applier shares, so that
// `berth status` shows any applier's apps without knowing the applier.
type View struct {
	// Unit names what runs the app: "project berth-line-3-web",
	// "release hello/hello".
	Unit string `json:"unit"`
	// State sums the unit up, such as "revision 2 deployed" or "not
	// installed"; empty when its parts say it all.
	State string `json:"state,omitempty"`
	// Parts are the unit's pieces: each service of a Compose project, the
	// chart of a Helm release.
	Parts []Part `json:"parts,omitempty"`
	// NotReady lists what was not ready when the applier gave up waiting,
	// as "Kind namespace/name: why".
	NotReady []string `json:"notReady,omitempty"`
}

// Part is one piece of what runs for an app.
type Part struct {
	// Name is the piece: a service name, "chart".
	Name string `json:"name"`
	// State and Health are how it runs ("running", "healthy"); empty when
	// it has none (a chart).
	State  string `json:"state,omitempty"`
	Health string `json:"health,omitempty"`
	// Ref is what it runs: an image reference, a chart and its version.
	Ref string `json:"ref,omitempty"`
	// Digest identifies Ref's content when Ref does not show it.
	Digest string `json:"digest,omitempty"`
	// Mirror is the registry mirror that served Ref; empty for its own
	// registry or the revision itself.
	Mirror string `json:"mirror,omitempty"`
}

// AppReport is an applier's live account of one app it applied or keeps
// free of drift: what runs now, how the last apply went, and what drift
// correction did.
type AppReport struct {
	// Source and App name the app; Kind is the applier.
	Source string `json:"source"`
	App    string `json:"app"`
	Kind   string `json:"kind"`
	// View is what runs now; nil when it could not be read (see Error).
	View *View `json:"view,omitempty"`
	// LastApply is how the last apply of the app by this agent ended.
	LastApply *ApplyResult `json:"lastApply,omitempty"`
	// Drift is what drift correction found and did.
	Drift *Drift `json:"drift,omitempty"`
	// Error says why what runs could not be read.
	Error string `json:"error,omitempty"`
	// Detail is the applier's own account, for scripts.
	Detail json.RawMessage `json:"detail,omitempty"`
}

// ApplyResult is how one apply of an app ended.
type ApplyResult struct {
	Outcome string    `json:"outcome"`
	Time    time.Time `json:"time"`
	Message string    `json:"message,omitempty"`
}

// Drift is what drift correction found and did for one app since the
// agent started.
type Drift struct {
	// LastCheck is when what runs was last compared with the revision;
	// zero when the applier watches events rather than checking.
	LastCheck time.Time `json:"lastCheck,omitzero"`
	// Drifted says what differed, the last time drift was found.
	Drifted []string `json:"drifted,omitempty"`
	// Restores counts the restores.
	Restores int `json:"restores"`
	// LastRestore is when the app was last restored.
	LastRestore time.Time `json:"lastRestore,omitzero"`
	// LastError is the error of the last restore or check; empty if it
	// succeeded.
	LastError string `json:"lastError,omitempty"`
	// Flapping is set when the app needed more restores than allowed within
	// the window: it is not restored again until the window passes.
	Flapping bool `json:"flapping"`
}
