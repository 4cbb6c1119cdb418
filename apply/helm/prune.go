package helm

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"

	"github.com/berth-dev/berth/state"
)

// Pruning: the releases of a source that its revision no longer lists are
// uninstalled once every app of the revision applied.

// releaseInfo is a release of a source found on the cluster.
type releaseInfo struct {
	namespace, name string
	source, app     string
	status          release.Status
}

func (r releaseInfo) key() string { return releaseKey(r.namespace, r.name) }

// listReleases finds the releases of source in every namespace (their
// newest revisions), by the LabelSource of their records.
func (a *Applier) listReleases(ctx context.Context, source string) (map[string]releaseInfo, error) {
	kc, err := a.conn()
	if err != nil {
		return nil, err
	}
	_ = ctx // Helm's storage drivers take no context.
	d := driver.NewSecrets(kc.clientset.CoreV1().Secrets(""))
	d.Log = func(format string, v ...any) { a.log.Debug("helm: " + fmt.Sprintf(format, v...)) }
	rels, err := d.Query(map[string]string{"owner": "helm", LabelSource: source})
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("list the Helm releases on %s: %w", kc.config.Host, err)
	}
	newest := map[string]*release.Release{}
	for _, r := range rels {
		k := releaseKey(r.Namespace, r.Name)
		if cur, ok := newest[k]; !ok || r.Version > cur.Version {
			newest[k] = r
		}
	}
	out := map[string]releaseInfo{}
	for k, r := range newest {
		st := release.StatusUnknown
		if r.Info != nil {
			st = r.Info.Status
		}
		if st == release.StatusUninstalled {
			continue
		}
		out[k] = releaseInfo{namespace: r.Namespace, name: r.Name, source: r.Labels[LabelSource], app: r.Labels[LabelApp], status: st}
	}
	return out, nil
}

// pruneCandidates lists the releases that are not among want, sorted.
func pruneCandidates(existing map[string]releaseInfo, want map[string]bool) []releaseInfo {
	var out []releaseInfo
	for _, k := range slices.Sorted(maps.Keys(existing)) {
		if !want[k] {
			out = append(out, existing[k])
		}
	}
	return out
}

// prune uninstalls a release its source no longer deploys.
func (a *Applier) prune(ctx context.Context, r releaseInfo) (state.AppStatus, error) {
	_ = ctx // Helm's uninstall takes no context: it is bounded by its timeout.
	status := state.AppStatus{Name: r.app, Kind: kind}
	detail, _ := json.Marshal(Detail{Release: r.name, Namespace: r.namespace})
	status.Detail = detail
	cfg, _, err := a.actionConfig(r.namespace, 0)
	if err == nil {
		un := action.NewUninstall(cfg)
		un.Timeout = state.DefaultTimeout
		if _, err = un.Run(r.name); isNotFound(err) {
			err = nil
		}
	}
	if err != nil {
		err = fmt.Errorf("prune app %q (release %s): %w", r.app, r.key(), err)
		status.Outcome, status.Message = OutcomeFailed, err.Error()
		a.log.Error("helm: prune failed", "source", r.source, "app", r.app, "release", r.key(), "err", err)
		return status, err
	}
	status.Outcome = OutcomePruned
	status.Message = fmt.Sprintf("uninstalled release %s: the revision no longer lists the app", r.key())
	a.forget(r.key())
	a.log.Info("helm: pruned", "source", r.source, "app", r.app, "release", r.key())
	return status, nil
}
