package state

import (
	"slices"
	"testing"
)

func TestRevisionApps(t *testing.T) {
	st := &DeviceState{
		Apps: []App{
			{Name: "web", Compose: &Compose{Path: "apps/web"}},
			{Name: "metrics", Helm: &Helm{Path: "charts/m"}},
		},
		Extensions: []App{
			{Name: "usb", Compose: &Compose{Path: "ext/usb"}},
			{Name: "vpn", Helm: &Helm{Path: "charts/vpn"}},
			{Name: "off", Helm: &Helm{Path: "charts/off"}},
			{Name: "cam", Compose: &Compose{Path: "ext/cam"}},
		},
	}
	isCompose := func(a App) bool { return a.Compose != nil }
	isHelm := func(a App) bool { return a.Helm != nil }
	rev := Revision{State: st, Extensions: []string{"vpn", "usb"}}
	for _, tc := range []struct {
		name string
		rev  Revision
		uses func(App) bool
		want []string
	}{
		{"compose: apps, then enabled extensions", rev, isCompose, []string{"web", "usb"}},
		{"helm: apps, then enabled extensions", rev, isHelm, []string{"metrics", "vpn"}},
		{"no extension enabled", Revision{State: st}, isHelm, []string{"metrics"}},
		{"no state", Revision{}, isCompose, nil},
	} {
		var got []string
		for _, a := range tc.rev.Apps(tc.uses) {
			got = append(got, a.Name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: Apps = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		rev  *Revision
		name string
		uses func(App) bool
		ok   bool
	}{
		{&rev, "usb", isCompose, true},
		{&rev, "cam", isCompose, false}, // not enabled
		{&rev, "metrics", isCompose, false},
		{&rev, "metrics", isHelm, true},
		{nil, "web", isCompose, false},
	} {
		app, ok := tc.rev.App(tc.name, tc.uses)
		if ok != tc.ok || (ok && app.Name != tc.name) {
			t.Errorf("App(%q) = %q, %v; want ok=%v", tc.name, app.Name, ok, tc.ok)
		}
	}
}
