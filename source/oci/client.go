package oci

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// Options configure how berth reaches registries.
type Options struct {
	// DockerConfig is the path of a Docker config.json holding credentials
	// and credential helpers. Empty means Docker's default location
	// ($DOCKER_CONFIG/config.json, else ~/.docker/config.json).
	DockerConfig string
	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string
	// CAFiles are more PEM bundles trusted like CAFile (a registry's own
	// CA besides the global one).
	CAFiles []string
	// Insecure talks plain HTTP to the registry.
	Insecure bool
	// UserAgent is sent with every request.
	UserAgent string
	// WrapTransport, when set, wraps the HTTP transport (to count or log
	// registry requests).
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// Transport, when set, replaces the HTTP transport to the registries
	// (CAFile does not apply to it): to serve requests from somewhere else
	// than the network, such as a bundle file. WrapTransport still wraps it.
	Transport http.RoundTripper
	// MaxTags and MaxTagPages cap a tag listing (Tags): more tags or pages
	// fail with ErrTooManyTags, so that a registry whose pages never end
	// cannot grow memory without bound. 0: DefaultMaxTags,
	// DefaultMaxTagPages.
	MaxTags     int
	MaxTagPages int
}

// Client reaches registries with one credential store, one TLS
// configuration and one token cache, so that auth tokens are reused across
// calls.
type Client struct {
	opts  Options
	creds credentials.Store
	http  *http.Client
	auth  *auth.Client
	// base is the transport without retries, for probing.
	base http.RoundTripper
	// plain remembers, per loopback host, whether it speaks plain HTTP.
	plain sync.Map
	// puller is what PullOptions reuse; nil until the first.
	puller atomic.Pointer[ggcrremote.Puller]
}

// NewClient builds a Client. It reads the CA file and opens the credential
// store but does not reach any registry.
func NewClient(opts Options) (*Client, error) {
	store, err := openStore(opts.DockerConfig)
	if err != nil {
		return nil, err
	}
	var rt http.RoundTripper
	if opts.Transport != nil {
		rt = opts.Transport
	} else if rt, err = newTransport(append([]string{opts.CAFile}, opts.CAFiles...)...); err != nil {
		return nil, err
	}
	rt = capTransport{rt}
	if opts.WrapTransport != nil {
		rt = opts.WrapTransport(rt)
	}
	base := rt
	if !opts.Insecure {
		rt = &loopbackHTTP{next: rt}
	}
	hc := &http.Client{Transport: retry.NewTransport(rt)}
	ua := opts.UserAgent
	if ua == "" {
		ua = "berth"
	}
	ac := &auth.Client{
		Client:     hc,
		Cache:      auth.NewCache(),
		Credential: credentials.Credential(store),
		Header:     http.Header{"User-Agent": {ua}},
	}
	return &Client{opts: opts, creds: store, http: hc, auth: ac, base: base}, nil
}

// newTransport is the default transport, trusting the caFiles (empty
// names skipped) besides the system roots.
func newTransport(caFiles ...string) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = time.Minute
	var pool *x509.CertPool
	for _, caFile := range caFiles {
		if caFile == "" {
			continue
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		if pool == nil {
			if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
	}
	if pool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return tr, nil
}

func openStore(path string) (credentials.Store, error) {
	so := credentials.StoreOptions{AllowPlaintextPut: true, DetectDefaultNativeStore: true}
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

// Repository returns an oras-go repository for ref's HOST/REPO (its tag
// and digest are ignored), for code that works with oras-go directly, such
// as copying graphs between registries. It is the repository every other
// method of the client uses: the client's credential store, TLS settings
// (system roots, CAFile, CAFiles), token cache and user agent, over plain
// HTTP when Options.Insecure. Callers may set its other fields (such as
// SkipReferrersGC) on the copy they get. It does not reach the registry.
func (c *Client) Repository(ref Reference) (*remote.Repository, error) {
	return c.repository(ref)
}

// repository returns an oras-go repository for ref sharing the client's
// token cache.
func (c *Client) repository(ref Reference) (*remote.Repository, error) {
	repo, err := remote.NewRepository(ref.Repo())
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrInvalidReference, ref, err)
	}
	repo.Client = c.auth
	repo.PlainHTTP = c.plainHTTP(ref.Registry)
	return repo, nil
}

// Login checks the credentials against the registry and stores them in the
// Docker config, like `docker login`.
func (c *Client) Login(ctx context.Context, host, username, password string) error {
	reg, err := remote.NewRegistry(host)
	if err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidReference, host, err)
	}
	reg.PlainHTTP = c.plainHTTP(host)
	reg.Client = &auth.Client{Client: c.http, Header: c.auth.Header, Cache: auth.NewCache()}
	cred := auth.Credential{Username: username, Password: password}
	if err := credentials.Login(ctx, c.creds, reg, cred); err != nil {
		return classify(fmt.Errorf("log in to %s: %w", host, err))
	}
	return nil
}

// NameOptions are the go-containerregistry name options matching the client.
func (c *Client) NameOptions() []name.Option {
	if c.opts.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// RemoteOptions are go-containerregistry remote options sharing the client's
// credentials and TLS settings, for code (cosign) built on that library.
func (c *Client) RemoteOptions(ctx context.Context) []ggcrremote.Option {
	return []ggcrremote.Option{
		ggcrremote.WithContext(ctx),
		ggcrremote.WithAuthFromKeychain(keychain{c.creds}),
		ggcrremote.WithTransport(c.http.Transport),
		ggcrremote.WithUserAgent(c.auth.Header.Get("User-Agent")),
	}
}

// PullOptions are RemoteOptions for reads that reuse one
// go-containerregistry Puller: the registry's /v2/ ping, the credentials
// and the token exchange are done once per repository, not at every call
// (a signature check made three pings, a poll during a rollout one more).
// After a failed read, ForgetPulls starts afresh, so that credentials
// rotated on the device, or a registry that changed its authentication,
// are picked up.
func (c *Client) PullOptions(ctx context.Context) []ggcrremote.Option {
	p := c.puller.Load()
	if p == nil {
		np, err := ggcrremote.NewPuller(c.RemoteOptions(context.WithoutCancel(ctx))...)
		if err != nil {
			return c.RemoteOptions(ctx)
		}
		c.puller.CompareAndSwap(nil, np)
		p = c.puller.Load()
	}
	return append(c.RemoteOptions(ctx), ggcrremote.Reuse(p))
}

// ForgetPulls drops what PullOptions reuse.
func (c *Client) ForgetPulls() { c.puller.Store(nil) }

// Name returns the go-containerregistry digest reference for ref, which must
// carry a digest.
func (c *Client) Name(ref Reference) (name.Digest, error) {
	if ref.Digest == "" {
		return name.Digest{}, fmt.Errorf("%w %s: a digest is required", ErrInvalidReference, ref)
	}
	d, err := name.NewDigest(ref.Repo()+"@"+ref.Digest, c.NameOptions()...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("%w %s: %v", ErrInvalidReference, ref, err)
	}
	return d, nil
}

// keychain adapts the oras-go credential store to go-containerregistry.
type keychain struct{ store credentials.Store }

var _ authn.Keychain = keychain{}

func (k keychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	cred, err := k.store.Get(context.Background(), res.RegistryStr())
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", res.RegistryStr(), err)
	}
	if cred == auth.EmptyCredential {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username:      cred.Username,
		Password:      cred.Password,
		IdentityToken: cred.RefreshToken,
		RegistryToken: cred.AccessToken,
	}), nil
}

// regError tags a registry error with one of the package's sentinels while
// keeping the original error in the chain.
type regError struct {
	kind error
	err  error
}

func (e *regError) Error() string   { return e.err.Error() }
func (e *regError) Unwrap() []error { return []error{e.kind, e.err} }

// classify maps registry errors to the package's sentinels and adds what to
// do next for the common failures.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var re *regError
	if errors.As(err, &re) {
		return err
	}
	err = plainDetails(err)
	var resp *errcode.ErrorResponse
	code := 0
	if errors.As(err, &resp) {
		code = resp.StatusCode
	}
	var uae x509.UnknownAuthorityError
	switch {
	case errors.Is(err, errdef.ErrNotFound) || code == http.StatusNotFound:
		return &regError{kind: ErrNotFound, err: err}
	case code == http.StatusUnauthorized || code == http.StatusForbidden || errors.Is(err, auth.ErrBasicCredentialNotFound):
		return &regError{kind: ErrUnauthorized, err: fmt.Errorf("%w (log in with `berth login HOST` or pass --docker-config)", err)}
	case errors.As(err, &uae):
		return fmt.Errorf("%w (the registry's certificate is not trusted: pass --ca-file with its CA)", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (is the registry running? check the host and port)", err)
	}
	return err
}
