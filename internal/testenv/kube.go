package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeVersion is the kube-apiserver StartKube runs, as built and cached by
// test/scripts/kube-apiserver.sh.
const KubeVersion = "v1.34.3"

// EtcdBinary is where Debian's etcd-server package installs etcd.
// StartKube looks on PATH first.
const EtcdBinary = "/usr/bin/etcd"

// Users of the API server StartKube starts. Both are in the group
// system:masters; they differ only by name, so that the audit log tells
// the requests of the code under test (KubeAgentUser, Kube.Kubeconfig)
// from the test's own (KubeAdminUser, Kube.Clientset).
const (
	KubeAgentUser = "berth-agent"
	KubeAdminUser = "testenv-admin"
)

// kubeReadyTimeout bounds the wait for /readyz: a few seconds on an idle
// machine, much more when the tests of other packages compete for the CPU.
const kubeReadyTimeout = 3 * time.Minute

// NoKubeMessage is how StartKube fails a test when kube-apiserver or etcd
// is missing.
const NoKubeMessage = "run `make test` (builds and caches kube-apiserver, installs etcd as root), or `bash test/scripts/kube-apiserver.sh` and `sudo apt-get install -y etcd-server`"

// Kube is a running kube-apiserver with its own etcd, both on 127.0.0.1,
// with their data, configuration and logs in a test temp dir.
//
// The API server serves HTTPS with a certificate from a fresh test CA,
// authenticates static tokens (KubeAgentUser and KubeAdminUser, both in
// system:masters), authorizes with RBAC, and writes an audit log (JSON
// lines, level Metadata, one event per request at stage
// ResponseComplete) that Writes and CountWrites read. There is no kubelet
// and no controller manager: pods never run, so Deployments never become
// ready, and deleted namespaces stay Terminating.
type Kube struct {
	// Dir holds etcd's data, the certificates, the token file, the audit
	// policy and the logs.
	Dir string
	// Server is the API server's URL, "https://127.0.0.1:PORT".
	Server string
	// CAFile is the PEM CA certificate the serving certificate chains to.
	CAFile string
	// Kubeconfig is a kubeconfig file for KubeAgentUser: what the code
	// under test is given.
	Kubeconfig string
	// AdminKubeconfig is a kubeconfig file for KubeAdminUser: what the
	// test's own clients use.
	AdminKubeconfig string
	// AuditLog is the API server's audit log.
	AuditLog string
	// APIServerLog and EtcdLog hold the output of the two servers.
	APIServerLog, EtcdLog string
	// AgentToken and AdminToken are the bearer tokens of the two users.
	AgentToken, AdminToken string

	// Config is a client configuration for KubeAdminUser.
	Config *rest.Config
	// Clientset and Dynamic are clients for KubeAdminUser.
	Clientset kubernetes.Interface
	Dynamic   dynamic.Interface

	// unboundToken authenticates kubeUnboundUser, who is in no group and
	// has no role binding: RBAC forbids it everything (a test checks that
	// RBAC is on).
	unboundToken string

	mu    sync.Mutex
	procs []*serverProc // etcd, then kube-apiserver
}

// kubeUnboundUser is a user without any permission.
const kubeUnboundUser = "testenv-unbound"

// StartKube starts etcd and kube-apiserver on free ports of 127.0.0.1,
// waits until GET /readyz answers ok, and writes the kubeconfig files. Both
// processes are killed when the test ends. A missing kube-apiserver (see
// KubeAPIServerBinary) or etcd fails the test with NoKubeMessage: it is
// never a reason to skip. Starting takes a few seconds.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	apiserver, err := KubeAPIServerBinary()
	if err != nil {
		t.Fatalf("testenv: %v: %s", err, NoKubeMessage)
	}
	etcd := findEtcdBinary()
	if etcd == "" {
		t.Fatalf("testenv: etcd not found (Debian package etcd-server): %s", NoKubeMessage)
	}
	dir := t.TempDir()
	k := &Kube{
		Dir:             dir,
		CAFile:          filepath.Join(dir, "ca.pem"),
		Kubeconfig:      filepath.Join(dir, "agent.kubeconfig"),
		AdminKubeconfig: filepath.Join(dir, "admin.kubeconfig"),
		AuditLog:        filepath.Join(dir, "audit.log"),
		APIServerLog:    filepath.Join(dir, "kube-apiserver.log"),
		EtcdLog:         filepath.Join(dir, "etcd.log"),
		AgentToken:      randomHex(16),
		AdminToken:      randomHex(16),
		unboundToken:    randomHex(16),
	}
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			t.Logf("kube-apiserver %s log (last lines of %s):\n%s", k.Server, k.APIServerLog, fileTail(k.APIServerLog, serverLogLines))
		}
	})
	if err := k.writeFiles(); err != nil {
		t.Fatalf("testenv: kube-apiserver files: %v", err)
	}

	// Ports found free can be taken before the servers bind them: try
	// others then.
	const attempts = 5
	for i := 1; ; i++ {
		err := k.start(etcd, apiserver)
		if err == nil {
			break
		}
		k.stop()
		if !errors.Is(err, errAddrInUse) || i == attempts {
			t.Fatalf("testenv: start kube-apiserver: %v", err)
		}
	}
	if err := k.writeKubeconfig(k.Kubeconfig, KubeAgentUser, k.AgentToken); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := k.writeKubeconfig(k.AdminKubeconfig, KubeAdminUser, k.AdminToken); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", k.AdminKubeconfig)
	if err != nil {
		t.Fatalf("testenv: load %s: %v", k.AdminKubeconfig, err)
	}
	cfg.UserAgent = "berth-testenv"
	cfg.QPS, cfg.Burst = 200, 400
	k.Config = cfg
	if k.Clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if k.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return k
}

// KubeAPIServerBinary returns the kube-apiserver KubeVersion that
// test/scripts/kube-apiserver.sh cached: $BERTH_KUBE_APISERVER when set,
// else kube-apiserver-KubeVersion in ${BERTH_TEST_CACHE:-~/.cache/berth-test}
// (XDG_CACHE_HOME is honoured as by the script).
func KubeAPIServerBinary() (string, error) {
	if p := os.Getenv("BERTH_KUBE_APISERVER"); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("BERTH_KUBE_APISERVER=%s is not an executable file", p)
	}
	cache := os.Getenv("BERTH_TEST_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("find the kube-apiserver cache: %w", err)
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "berth-test")
	}
	p := filepath.Join(cache, "kube-apiserver-"+KubeVersion)
	if !isExecutable(p) {
		return "", fmt.Errorf("no kube-apiserver %s at %s", KubeVersion, p)
	}
	return p, nil
}

// etcdFallback is EtcdBinary, a variable for tests.
var etcdFallback = EtcdBinary

func findEtcdBinary() string { return findBinary("etcd", etcdFallback) }

func (k *Kube) certFile() string    { return filepath.Join(k.Dir, "server.pem") }
func (k *Kube) keyFile() string     { return filepath.Join(k.Dir, "server-key.pem") }
func (k *Kube) saKeyFile() string   { return filepath.Join(k.Dir, "sa-key.pem") }
func (k *Kube) tokenFile() string   { return filepath.Join(k.Dir, "tokens.csv") }
func (k *Kube) policyFile() string  { return filepath.Join(k.Dir, "audit-policy.yaml") }
func (k *Kube) etcdDataDir() string { return filepath.Join(k.Dir, "etcd") }

// writeFiles writes the certificates, the service-account key, the token
// file and the audit policy.
func (k *Kube) writeFiles() error {
	if _, err := writeTLSFiles(k.CAFile, k.certFile(), k.keyFile()); err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	if err := writePEM(k.saKeyFile(), "EC PRIVATE KEY", der, 0o600); err != nil {
		return err
	}
	// token,user,uid,"group1,group2"
	tokens := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n%s,%s,%s,\"system:masters\"\n",
		k.AgentToken, KubeAgentUser, KubeAgentUser, k.AdminToken, KubeAdminUser, KubeAdminUser)
	tokens += fmt.Sprintf("%s,%s,%s\n", k.unboundToken, kubeUnboundUser, kubeUnboundUser)
	if err := os.WriteFile(k.tokenFile(), []byte(tokens), 0o600); err != nil {
		return err
	}
	return os.WriteFile(k.policyFile(), []byte(auditPolicy), 0o644)
}

// start starts etcd and kube-apiserver on fresh ports and waits until the
// API server is ready.
func (k *Kube) start(etcdBin, apiserverBin string) error {
	clientPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	apiPort, err := freePort()
	if err != nil {
		return err
	}
	if clientPort == peerPort || clientPort == apiPort || peerPort == apiPort {
		return fmt.Errorf("%w: the same free port twice", errAddrInUse)
	}
	clientURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))
	peerURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))
	if err := os.RemoveAll(k.etcdDataDir()); err != nil {
		return err
	}
	etcd, err := k.run("etcd", k.EtcdLog, etcdBin,
		"--name", "testenv",
		"--data-dir", k.etcdDataDir(),
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "testenv="+peerURL,
		"--initial-cluster-state", "new",
	)
	if err != nil {
		return err
	}
	etcdClient := &http.Client{Timeout: 2 * time.Second}
	if err := etcd.waitReady("answering GET /health", 30*time.Second, func() error {
		resp, err := etcdClient.Get(clientURL + "/health")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"true"`)) {
			return fmt.Errorf("GET /health: %s %s", resp.Status, body)
		}
		return nil
	}); err != nil {
		return err
	}

	k.Server = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort))
	api, err := k.run("kube-apiserver", k.APIServerLog, apiserverBin,
		"--etcd-servers", clientURL,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(apiPort),
		"--tls-cert-file", k.certFile(),
		"--tls-private-key-file", k.keyFile(),
		"--token-auth-file", k.tokenFile(),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", k.saKeyFile(),
		"--service-account-signing-key-file", k.saKeyFile(),
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--audit-policy-file", k.policyFile(),
		"--audit-log-path", k.AuditLog,
		"--audit-log-format", "json",
		"--audit-log-mode", "blocking",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	client := k.httpClient()
	client.Timeout = 5 * time.Second
	return api.waitReady("answering GET /readyz", kubeReadyTimeout, func() error {
		req, err := http.NewRequest(http.MethodGet, k.Server+"/readyz", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+k.AdminToken)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
			return fmt.Errorf("GET /readyz: %s: %s", resp.Status, failedChecks(string(body)))
		}
		return nil
	})
}

// failedChecks keeps the failed checks of a /readyz answer.
func failedChecks(body string) string {
	var out []string
	for l := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(l, "[-]") {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(l, "[-]"), " failed: reason withheld"))
		}
	}
	if len(out) == 0 {
		return strings.TrimSpace(body)
	}
	return "failed checks: " + strings.Join(out, ", ")
}

// run starts one server with its output appended to logFile.
func (k *Kube) run(name, logFile, bin string, args ...string) (*serverProc, error) {
	p, err := launch(name, k.Dir, logFile, bin+" "+strings.Join(args, " "), bin, args...)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.procs = append(k.procs, p)
	k.mu.Unlock()
	return p, nil
}

// stop kills the servers, the API server first, and waits for them.
func (k *Kube) stop() {
	k.mu.Lock()
	procs := k.procs
	k.procs = nil
	k.mu.Unlock()
	for _, p := range slices.Backward(procs) {
		p.stop(0)
	}
}

// httpClient trusts the test CA and no other; it sends no credentials.
func (k *Kube) httpClient() *http.Client {
	pool := x509.NewCertPool()
	if data, err := os.ReadFile(k.CAFile); err == nil {
		pool.AppendCertsFromPEM(data)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}
}

// writeKubeconfig writes a kubeconfig for user with a bearer token.
func (k *Kube) writeKubeconfig(path, user, token string) error {
	ca, err := os.ReadFile(k.CAFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testenv"] = &clientcmdapi.Cluster{Server: k.Server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "testenv"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// CreateNamespace creates a namespace for a test and returns its name,
// "<prefix>-<random>". Nothing deletes it: without a controller manager a
// deleted namespace stays Terminating, and the API server goes with the
// test anyway.
func (k *Kube) CreateNamespace(t testing.TB, prefix string) string {
	t.Helper()
	name := prefix + "-" + randomHex(3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := k.Clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("testenv: create namespace %s: %v", name, err)
	}
	return name
}
