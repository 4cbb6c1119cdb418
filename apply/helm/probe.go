package helm

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/clientcmd"
)

// Probe checks that the cluster of kubeconfig (Options.Kubeconfig's
// defaults apply) answers, within timeout; the error names the kubeconfig
// it tried. It only reads the server's version.
func Probe(ctx context.Context, kubeconfig string, timeout time.Duration) error {
	rules, desc := kubeconfigRules(kubeconfig)
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", desc, err)
	}
	cfg.Timeout = timeout
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", desc, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := dc.ServerVersion()
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("the kube-apiserver of kubeconfig %s (%s) does not answer: %w", desc, cfg.Host, err)
	}
	return nil
}
