package helm

import (
	"context"
	"fmt"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/kube"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/resource"
)

// notReady lists the objects of a release manifest that are not ready, as
// `helm --wait` judges them (Helm's ReadyChecker), each as
// "Kind namespace/name: why". Best effort: an object that cannot be read is
// listed with the reason.
func (a *Applier) notReady(ctx context.Context, cfg *action.Configuration, manifest string) []string {
	if strings.TrimSpace(manifest) == "" {
		return nil
	}
	kc, err := a.conn()
	if err != nil {
		return nil
	}
	resources, err := cfg.KubeClient.Build(strings.NewReader(manifest), false)
	if err != nil {
		a.log.Warn("helm: cannot read the release manifest to tell what is not ready", "err", err)
		return nil
	}
	logf := func(format string, v ...any) { a.log.Debug("helm: " + fmt.Sprintf(format, v...)) }
	checker := kube.NewReadyChecker(kc.clientset, logf, kube.PausedAsReady(true))
	var out []string
	for _, info := range resources {
		name := objectName(info)
		ready, err := checker.IsReady(ctx, info)
		switch {
		case apierrors.IsNotFound(err):
			out = append(out, name+": does not exist")
		case err != nil:
			out = append(out, fmt.Sprintf("%s: %v", name, err))
		case !ready:
			out = append(out, name+": "+whyNotReady(info))
		}
	}
	return out
}

// objectName is "Kind namespace/name" (or "Kind name" when cluster-wide).
func objectName(info *resource.Info) string {
	k := info.Mapping.GroupVersionKind.Kind
	if info.Namespace == "" {
		return k + " " + info.Name
	}
	return k + " " + info.Namespace + "/" + info.Name
}

// whyNotReady reads the live object and says why it is not ready, for the
// kinds whose status says it.
func whyNotReady(info *resource.Info) string {
	obj, err := resource.NewHelper(info.Client, info.Mapping).Get(info.Namespace, info.Name)
	if err != nil {
		return "not ready (" + err.Error() + ")"
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return "not ready"
	}
	num := func(fields ...string) int64 {
		n, _, _ := unstructured.NestedInt64(u.Object, fields...)
		return n
	}
	switch info.Mapping.GroupVersionKind.Kind {
	case "Deployment", "StatefulSet", "ReplicaSet":
		want, found, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
		if !found {
			want = 1
		}
		return fmt.Sprintf("%d of %d replicas ready, %d updated", num("status", "readyReplicas"), want, num("status", "updatedReplicas"))
	case "DaemonSet":
		return fmt.Sprintf("%d of %d pods ready", num("status", "numberReady"), num("status", "desiredNumberScheduled"))
	case "PersistentVolumeClaim":
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		return "phase " + phase
	case "Pod":
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		return "phase " + phase
	case "Service":
		return "no load balancer address or cluster IP yet"
	case "Job":
		return fmt.Sprintf("%d of %d completions", num("status", "succeeded"), max(num("spec", "completions"), 1))
	}
	return "not ready"
}
