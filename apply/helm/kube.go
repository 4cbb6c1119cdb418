package helm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/kube"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeConn is the connection to the cluster, shared by every release and
// namespace: one client configuration, one discovery cache, one REST
// mapper.
type kubeConn struct {
	kubeconfig string // as resolved, for errors
	raw        clientcmd.ClientConfig
	config     *rest.Config
	discovery  discovery.CachedDiscoveryInterface
	mapper     meta.RESTMapper
	clientset  kubernetes.Interface
}

// kubeconfigRules are the loading rules of Options.Kubeconfig, else
// $KUBECONFIG (a list of files, as kubectl reads it), else
// DefaultKubeconfig. It returns them and a description for errors.
func kubeconfigRules(path string) (*clientcmd.ClientConfigLoadingRules, string) {
	if path != "" {
		return &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}, path
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return &clientcmd.ClientConfigLoadingRules{Precedence: filepath.SplitList(env)}, "KUBECONFIG=" + env
	}
	return &clientcmd.ClientConfigLoadingRules{ExplicitPath: DefaultKubeconfig}, DefaultKubeconfig
}

// conn returns the connection to the cluster, loading the kubeconfig on
// first use. A kubeconfig that cannot be loaded (k3s not started yet) fails
// this call and is tried again on the next one.
func (a *Applier) conn() (*kubeConn, error) {
	a.kubeMu.Lock()
	defer a.kubeMu.Unlock()
	if a.kube != nil {
		return a.kube, nil
	}
	rules, desc := kubeconfigRules(a.opts.Kubeconfig)
	raw := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := raw.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w (set apply.helm.kubeconfig to the cluster's kubeconfig)", desc, err)
	}
	cfg.UserAgent = "berth"
	// Helm sends one request per object and per check: the client-go
	// default of 5 requests a second makes a chart of 50 objects slow.
	cfg.QPS, cfg.Burst = 50, 100
	cfg.WarningHandler = warningLogger{log: a.log}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes API %s (kubeconfig %s): %w", cfg.Host, desc, err)
	}
	cached := memory.NewMemCacheClient(dc)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes API %s (kubeconfig %s): %w", cfg.Host, desc, err)
	}
	a.kube = &kubeConn{
		kubeconfig: desc,
		raw:        raw,
		config:     cfg,
		discovery:  cached,
		mapper:     restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, nil),
		clientset:  cs,
	}
	return a.kube, nil
}

// warningLogger sends the API server's warnings (deprecated APIs, ...) to
// the log instead of stderr.
type warningLogger struct{ log *slog.Logger }

func (w warningLogger) HandleWarningHeader(code int, agent, text string) {
	if code == 299 && text != "" {
		w.log.Warn("helm: kubernetes API warning", "warning", text)
	}
}

// restGetter is the genericclioptions.RESTClientGetter Helm's actions get:
// the shared connection, seen from one namespace.
type restGetter struct {
	conn      *kubeConn
	namespace string
}

var _ genericclioptions.RESTClientGetter = restGetter{}

func (g restGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.conn.config), nil }

func (g restGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	return g.conn.discovery, nil
}

func (g restGetter) ToRESTMapper() (meta.RESTMapper, error) { return g.conn.mapper, nil }

func (g restGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return namespacedConfig{base: g.conn.raw, namespace: g.namespace}
}

// namespacedConfig is the kubeconfig with its namespace replaced.
type namespacedConfig struct {
	base      clientcmd.ClientConfig
	namespace string
}

var _ clientcmd.ClientConfig = namespacedConfig{}

func (c namespacedConfig) RawConfig() (clientcmdapi.Config, error) { return c.base.RawConfig() }
func (c namespacedConfig) ClientConfig() (*rest.Config, error)     { return c.base.ClientConfig() }
func (c namespacedConfig) Namespace() (string, bool, error)        { return c.namespace, true, nil }
func (c namespacedConfig) ConfigAccess() clientcmd.ConfigAccess    { return c.base.ConfigAccess() }

// actionConfig returns a new Helm action configuration for namespace:
// release records are Secrets of that namespace (Helm's default driver),
// bounded to maxHistory revisions per release (0: unbounded). One is made
// per operation, so that operations on different sources never share one.
func (a *Applier) actionConfig(namespace string, maxHistory int) (*action.Configuration, *kubeConn, error) {
	kc, err := a.conn()
	if err != nil {
		return nil, nil, err
	}
	cfg := new(action.Configuration)
	logf := func(format string, v ...any) {
		a.log.Debug("helm: "+fmt.Sprintf(format, v...), "namespace", namespace)
	}
	if err := cfg.Init(restGetter{conn: kc, namespace: namespace}, namespace, "secret", logf); err != nil {
		return nil, nil, fmt.Errorf("helm configuration for namespace %s: %w", namespace, err)
	}
	if c, ok := cfg.KubeClient.(*kube.Client); ok {
		c.Namespace = namespace
	}
	cfg.Releases.MaxHistory = maxHistory
	return cfg, kc, nil
}

// ensureNamespace creates namespace when it does not exist; an existing
// one costs one read.
func (a *Applier) ensureNamespace(ctx context.Context, kc *kubeConn, namespace string) error {
	_, err := kc.clientset.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("get namespace %s on %s: %w", namespace, kc.config.Host, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{"name": namespace}}}
	_, err = kc.clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: fieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s on %s: %w", namespace, kc.config.Host, err)
	}
	a.log.Info("helm: created namespace", "namespace", namespace)
	return nil
}

// isNotFound reports whether err says that a release, or a deployed
// revision of it, does not exist.
func isNotFound(err error) bool {
	return errors.Is(err, driver.ErrReleaseNotFound) || errors.Is(err, driver.ErrNoDeployedReleases)
}
