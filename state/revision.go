package state

import "slices"

// Revision is a verified, extracted revision handed to the appliers.
type Revision struct {
	// Source is the name of the source the revision belongs to.
	Source string
	// Digest is the artifact's manifest digest.
	Digest string
	// Dir is the extracted artifact; it does not change while applied.
	Dir string
	// State is the artifact's berth.yaml, or nil when it has none.
	State *DeviceState
	// Extensions are the extensions this device enables.
	Extensions []string
}

// Apps lists the apps of the revision that uses says an applier deploys
// (such as those with Compose set): its apps, then the extensions the
// device enables, in file order. A revision without a state has none.
func (r Revision) Apps(uses func(App) bool) []App {
	if r.State == nil {
		return nil
	}
	var out []App
	for _, app := range r.State.Apps {
		if uses(app) {
			out = append(out, app)
		}
	}
	for _, ext := range r.State.Extensions {
		if uses(ext) && slices.Contains(r.Extensions, ext.Name) {
			out = append(out, ext)
		}
	}
	return out
}

// App returns the app named name among r.Apps(uses); r may be nil (no
// previous revision).
func (r *Revision) App(name string, uses func(App) bool) (App, bool) {
	if r == nil {
		return App{}, false
	}
	for _, app := range r.Apps(uses) {
		if app.Name == name {
			return app, true
		}
	}
	return App{}, false
}
