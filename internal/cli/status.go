package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/reconcile/api"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/state"
)

// printStatus renders `berth status`: every source, then each app of its
// applied revision as the appliers report it, whichever applier it is.
func printStatus(w io.Writer, st *api.Status) {
	if d := st.Device; d != nil {
		fmt.Fprintf(w, "device %s%s\n", d.ID, formatLabels(d.Labels))
	}
	if len(st.Sources) == 0 {
		fmt.Fprintln(w, "no sources")
		return
	}
	for _, s := range st.Sources {
		fmt.Fprintf(w, "source %s", s.Name)
		if s.URL != "" {
			fmt.Fprintf(w, "  %s (%s, every %s)", s.URL, s.Ref, s.Interval)
		}
		if s.Suspended {
			fmt.Fprint(w, "  SUSPENDED")
		}
		fmt.Fprintln(w)
		if a := s.Applied; a != nil {
			fmt.Fprintf(w, "  applied:  %s", a.Digest)
			version, tag := a.Version, a.Tag
			if version == "" && tag == "" {
				// A rollback names only the digest: the version it had
				// when it was applied before is in the history.
				version, tag = knownAs(s.History, a.Digest)
			}
			if version != "" {
				fmt.Fprintf(w, " (version %s)", version)
			} else if tag != "" {
				fmt.Fprintf(w, " (tag %s)", tag)
			}
			fmt.Fprintf(w, " at %s\n", a.Time.Format(time.RFC3339))
			if r := a.Annotations["org.opencontainers.image.revision"]; r != "" {
				fmt.Fprintf(w, "  revision: %s\n", r)
			}
			if a.Via != nil {
				fmt.Fprintf(w, "  via:      %s\n", describeVia(a.Via))
			}
		} else {
			fmt.Fprintln(w, "  applied:  nothing yet")
		}
		if l := s.Last; l != nil {
			fmt.Fprintf(w, "  last:     %s at %s", l.Outcome, l.Time.Format(time.RFC3339))
			if l.Error != "" {
				fmt.Fprintf(w, ": %s", l.Error)
			}
			fmt.Fprintln(w)
		}
		if l := s.Last; l != nil && l.Message != "" && s.Waiting == nil {
			fmt.Fprintf(w, "            %s\n", l.Message)
		}
		printRollout(w, &s)
		if !s.NextReconcile.IsZero() && !s.Suspended {
			fmt.Fprintf(w, "  next:     %s\n", s.NextReconcile.Format(time.RFC3339))
		}
		if s.Applied != nil {
			for _, app := range s.Applied.Apps {
				printApp(w, app, liveReport(st.Apps, s.Name, app.Name))
			}
		}
	}
}

// knownAs returns the version or tag digest had in the newest entry of
// hist that names one.
func knownAs(hist []store.Revision, digest string) (version, tag string) {
	for _, r := range hist {
		if r.Digest == digest && (r.Version != "" || r.Tag != "") {
			return r.Version, r.Tag
		}
	}
	return "", ""
}

// describeVia says where the fetches of a revision came from, grouped:
// "mirror registry.plant.local/acme (manifest, signatures, layer); source (tag)".
func describeVia(v *store.Via) string {
	var order []string
	what := map[string][]string{}
	for _, f := range []struct{ name, via string }{{"tag", v.Tag}, {"manifest", v.Manifest}, {"signatures", v.Signatures}, {"layer", v.Layer}} {
		if f.via == "" {
			continue
		}
		if _, ok := what[f.via]; !ok {
			order = append(order, f.via)
		}
		what[f.via] = append(what[f.via], f.name)
	}
	parts := make([]string, 0, len(order))
	for _, via := range order {
		name := via
		if via != store.ViaSource && via != store.ViaBundle {
			name = "mirror " + via
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", name, strings.Join(what[via], ", ")))
	}
	return strings.Join(parts, "; ")
}

// liveReport is the live report of the app of source, nil when none.
func liveReport(reports []state.AppReport, source, app string) *state.AppReport {
	for i := range reports {
		if reports[i].Source == source && reports[i].App == app {
			return &reports[i]
		}
	}
	return nil
}

// printApp prints one app: its result in the applied revision, then what
// runs for it now (or, without an agent, what ran when it was applied),
// the last apply and the drift corrections.
func printApp(w io.Writer, app state.AppStatus, live *state.AppReport) {
	fmt.Fprintf(w, "  app %s (%s): %s", app.Name, app.Kind, app.Outcome)
	if app.Message != "" {
		fmt.Fprintf(w, ": %s", firstLine(app.Message))
	}
	fmt.Fprintln(w)
	v, when := app.View, "at apply"
	if live != nil && live.View != nil {
		v, when = live.View, "now"
	}
	if v != nil {
		fmt.Fprintf(w, "    %s (%s)", v.Unit, when)
		if v.State != "" {
			fmt.Fprintf(w, ": %s", v.State)
		}
		fmt.Fprintln(w)
		for _, p := range v.Parts {
			printPart(w, p)
		}
		for _, nr := range v.NotReady {
			fmt.Fprintf(w, "      not ready: %s\n", nr)
		}
	}
	if live == nil {
		return
	}
	if live.Error != "" {
		fmt.Fprintf(w, "      live state unavailable: %s\n", firstLine(live.Error))
	}
	if l := live.LastApply; l != nil {
		fmt.Fprintf(w, "      last apply: %s at %s", l.Outcome, l.Time.Format(time.RFC3339))
		if l.Message != "" {
			fmt.Fprintf(w, ": %s", firstLine(l.Message))
		}
		fmt.Fprintln(w)
	}
	if d := live.Drift; d != nil {
		printDrift(w, d)
	}
}

// printPart prints one piece of what runs: a service, a chart.
func printPart(w io.Writer, p state.Part) {
	fmt.Fprintf(w, "      %s:", p.Name)
	if p.State != "" {
		fmt.Fprintf(w, " %s", p.State)
		if p.Health != "" {
			fmt.Fprintf(w, ", %s", p.Health)
		}
	}
	if p.Ref != "" {
		fmt.Fprintf(w, "  %s", p.Ref)
	}
	if p.Digest != "" {
		fmt.Fprintf(w, "  %s", p.Digest)
	}
	if p.Mirror != "" {
		fmt.Fprintf(w, " (via mirror %s)", p.Mirror)
	}
	fmt.Fprintln(w)
}

// printDrift prints what drift correction found and did.
func printDrift(w io.Writer, d *state.Drift) {
	switch {
	case d.Restores > 0:
		fmt.Fprintf(w, "      drift: %d restores, last %s (%s)", d.Restores, d.LastRestore.Format(time.RFC3339), strings.Join(d.Drifted, "; "))
		if d.Flapping {
			fmt.Fprint(w, " FLAPPING: restores paused")
		}
		fmt.Fprintln(w)
	case len(d.Drifted) > 0:
		fmt.Fprintf(w, "      drift: found, not restored (%s)\n", strings.Join(d.Drifted, "; "))
	case !d.LastCheck.IsZero():
		fmt.Fprintf(w, "      drift: none (checked %s)\n", d.LastCheck.Format(time.RFC3339))
	}
	if d.LastError != "" {
		fmt.Fprintf(w, "      drift error: %s\n", firstLine(d.LastError))
	}
}

// formatLabels writes labels as " (k=v, k=v)", sorted; "" for none.
func formatLabels(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// printRollout prints what holds the newest revision back, where the
// device stands in the rollout of the newest release with a plan, the
// update windows and the inhibitors.
func printRollout(w io.Writer, s *api.SourceStatus) {
	if wt := s.Waiting; wt != nil {
		fmt.Fprintf(w, "  waiting:  %s %s since %s\n", short(wt.Digest), wt.Message, wt.Since.Format(time.RFC3339))
	}
	if len(s.Releases) > 0 {
		r := s.Releases[0]
		fmt.Fprintf(w, "  rollout:  %s wave %s (opens %s), %s", short(r.Digest), r.Wave, r.Opens.Format(time.RFC3339), r.Verdict)
		if st := r.Statement; st != nil {
			fmt.Fprintf(w, "; statement %s signed %s by %s", st.Action, st.SignedAt.Format(time.RFC3339), st.Signer)
			if st.Reason != "" {
				fmt.Fprintf(w, " (%s)", st.Reason)
			}
		}
		if r.Ignored > 0 {
			fmt.Fprintf(w, "; %d statements ignored (%s)", r.Ignored, firstLine(r.IgnoredReason))
		}
		fmt.Fprintln(w)
	}
	if wd := s.Windows; wd != nil && (wd.Apply != "always" || wd.Download != "always") {
		fmt.Fprintf(w, "  windows:  apply %s", wd.Apply)
		if !wd.ApplyOpen {
			fmt.Fprintf(w, " (closed, next %s)", wd.NextApply.Format(time.RFC3339))
		}
		fmt.Fprintf(w, "; download %s\n", wd.Download)
	}
	for _, in := range s.Inhibitors {
		fmt.Fprintf(w, "  inhibited: %s\n", in.String())
	}
}
