package replicate

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// Opener opens an oras-go repository, "host/path", with credentials and
// TLS settings. Registries is one.
type Opener interface {
	Repository(name string) (*remote.Repository, error)
}

var _ Opener = (*Registries)(nil)

// Access are the connection settings shared by every registry: berth's
// global --docker-config, --ca-file and --insecure flags.
type Access struct {
	// DockerConfig is a Docker config.json with credentials; empty:
	// Docker's default location.
	DockerConfig string
	// CAFile is a PEM bundle trusted, in addition to the system roots, for
	// every registry.
	CAFile string
	// Insecure talks plain HTTP to every registry.
	Insecure bool
	// UserAgent is sent with every request.
	UserAgent string
	// WrapTransport, when set, wraps the HTTP transport (to count or log
	// requests).
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Registries opens repositories with one credential store, one TLS
// configuration (the system roots, Access.CAFile and the caFile of every
// registries: entry) and one token cache, so that tokens are reused across
// jobs and passes. Hosts marked insecure are reached over plain HTTP.
type Registries struct {
	client *auth.Client
	all    bool            // every host plain HTTP
	plain  map[string]bool // lowercased host → plain HTTP
}

// NewRegistries builds a Registries from the global settings and the
// registries: entries of the configuration. It reads the CA files and
// opens the credential store but does not reach any registry.
func NewRegistries(a Access, regs []Registry) (*Registries, error) {
	store, err := openStore(a.DockerConfig)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = time.Minute
	var cas []string
	if a.CAFile != "" {
		cas = append(cas, a.CAFile)
	}
	r := &Registries{all: a.Insecure, plain: map[string]bool{}}
	for _, reg := range regs {
		if reg.CAFile != "" {
			cas = append(cas, reg.CAFile)
		}
		if reg.Insecure {
			r.plain[strings.ToLower(reg.Host)] = true
		}
	}
	if len(cas) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for _, f := range cas {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read CA file: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s holds no PEM certificate", f)
			}
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var rt http.RoundTripper = tr
	if a.WrapTransport != nil {
		rt = a.WrapTransport(rt)
	}
	ua := a.UserAgent
	if ua == "" {
		ua = "berth"
	}
	r.client = &auth.Client{
		Client:     &http.Client{Transport: retry.NewTransport(rt)},
		Cache:      auth.NewCache(),
		Credential: credentials.Credential(store),
		Header:     http.Header{"User-Agent": {ua}},
	}
	return r, nil
}

func openStore(path string) (credentials.Store, error) {
	so := credentials.StoreOptions{DetectDefaultNativeStore: true}
	if path == "" {
		s, err := credentials.NewStoreFromDocker(so)
		if err != nil {
			return nil, fmt.Errorf("open Docker credential store: %w", err)
		}
		return s, nil
	}
	s, err := credentials.NewStore(path, so)
	if err != nil {
		return nil, fmt.Errorf("open Docker config %s: %w", path, err)
	}
	return s, nil
}

// Repository opens the repository name ("host/path"). Nothing is deleted
// through it: the referrers fallback index it updates at a registry
// without the referrers API replaces the old one without deleting it.
func (r *Registries) Repository(name string) (*remote.Repository, error) {
	repo, err := remote.NewRepository(name)
	if err != nil {
		return nil, fmt.Errorf("repository %q: %w", name, err)
	}
	repo.Client = r.client
	repo.PlainHTTP = r.all || r.plain[strings.ToLower(repo.Reference.Registry)]
	repo.SkipReferrersGC = true
	return repo, nil
}
