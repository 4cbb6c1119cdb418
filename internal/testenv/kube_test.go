package testenv

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestKube(t *testing.T) {
	var pids []int
	var k *Kube
	t.Run("start", func(t *testing.T) {
		k = StartKube(t)
		for _, p := range k.procs {
			pids = append(pids, p.cmd.Process.Pid)
		}
		if len(pids) != 2 {
			t.Fatalf("%d processes, want etcd and kube-apiserver", len(pids))
		}
		if !strings.HasPrefix(k.Server, "https://127.0.0.1:") {
			t.Errorf("Server = %s", k.Server)
		}
		ctx := context.Background()
		v, err := k.Clientset.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v.GitVersion != KubeVersion {
			t.Errorf("server version %s, want %s", v.GitVersion, KubeVersion)
		}

		// TLS with the test CA, and authentication: an unknown token is
		// 401; no token is the anonymous user, whom RBAC forbids listing.
		client := k.httpClient()
		for token, want := range map[string]int{"": http.StatusForbidden, "wrong": http.StatusUnauthorized} {
			req, _ := http.NewRequest(http.MethodGet, k.Server+"/api/v1/namespaces", nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("token %q: %s, want %d", token, resp.Status, want)
			}
		}
		if _, err := http.Get(k.Server + "/readyz"); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("GET without the CA: err = %v, want a certificate error", err)
		}

		// RBAC is on: a user without role bindings is forbidden, and the
		// bootstrap roles exist.
		req, _ := http.NewRequest(http.MethodGet, k.Server+"/api/v1/namespaces", nil)
		req.Header.Set("Authorization", "Bearer "+k.unboundToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("user without role bindings: %s, want 403", resp.Status)
		}
		if _, err := k.Clientset.RbacV1().ClusterRoles().Get(ctx, "cluster-admin", metav1.GetOptions{}); err != nil {
			t.Errorf("bootstrap role cluster-admin: %v", err)
		}

		// The agent's kubeconfig works, and its writes are counted by user.
		cfg, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		agent, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ns := k.CreateNamespace(t, "kube-test")
		mark := k.Mark()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "one", Namespace: ns}, Data: map[string]string{"a": "b"}}
		if _, err := agent.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := agent.CoreV1().ConfigMaps(ns).Get(ctx, "one", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := agent.CoreV1().ConfigMaps(ns).Delete(ctx, "one", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Clientset.CoreV1().ConfigMaps(ns).Get(ctx, "one", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("get deleted config map: %v", err)
		}
		writes := k.Writes(t, mark, KubeAgentUser)
		if len(writes) != 2 || writes[0].Verb != "create" || writes[1].Verb != "delete" {
			t.Errorf("agent writes = %v, want create and delete", writes)
		} else if ref := writes[0].ObjectRef; ref == nil || ref.Resource != "configmaps" || ref.Namespace != ns {
			t.Errorf("object of the create = %+v", ref)
		}
		if n := k.CountWrites(t, mark, KubeAdminUser); n != 0 {
			t.Errorf("admin writes = %d, want 0", n)
		}
		evs, err := k.Events(mark, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) < 4 { // create, get, delete of the agent, get of the admin
			t.Errorf("events since the mark = %v", evs)
		}
		if n := k.CountWrites(t, k.Mark(), ""); n != 0 {
			t.Errorf("writes after a fresh mark = %d", n)
		}

		// The dynamic client works.
		gvr := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
		if _, err := k.Dynamic.Resource(gvr).Get(ctx, ns, metav1.GetOptions{}); err != nil {
			t.Errorf("dynamic get namespace %s: %v", ns, err)
		}
	})
	if k == nil {
		return
	}
	// Both processes are gone once the test that started them ended.
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still running after the test", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestKubeMissingBinary(t *testing.T) {
	t.Setenv("BERTH_KUBE_APISERVER", filepath.Join(t.TempDir(), "nope"))
	if _, err := KubeAPIServerBinary(); err == nil || !strings.Contains(err.Error(), "BERTH_KUBE_APISERVER") {
		t.Errorf("err = %v", err)
	}
	t.Setenv("BERTH_KUBE_APISERVER", "")
	t.Setenv("BERTH_TEST_CACHE", t.TempDir())
	_, err := KubeAPIServerBinary()
	if err == nil || !strings.Contains(err.Error(), "kube-apiserver-"+KubeVersion) {
		t.Errorf("err = %v", err)
	}
	if !strings.Contains(NoKubeMessage, "test/scripts/kube-apiserver.sh") || !strings.Contains(NoKubeMessage, "etcd-server") {
		t.Errorf("NoKubeMessage = %q", NoKubeMessage)
	}
}
