package replicate

import (
	"fmt"
	"net/http"
	"strings"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/berth-dev/berth/source/oci"
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

// Registries opens repositories through source/oci clients: one for the
// global settings (Access), and one per registries: entry with the entry's
// settings on top of them (its caFile trusted besides the system roots and
// Access.CAFile; plain HTTP when it or Access is insecure). All of them read
// the same Docker credentials, and each keeps its token cache, so that
// tokens are reused across jobs and passes.
type Registries struct {
	def   *oci.Client
	hosts map[string]*oci.Client // lowercased host → its entry's client
}

// NewRegistries builds a Registries from the global settings and the
// registries: entries of the configuration. It reads the CA files and
// opens the credential store but does not reach any registry.
func NewRegistries(a Access, regs []Registry) (*Registries, error) {
	base := oci.Options{
		DockerConfig:  a.DockerConfig,
		CAFile:        a.CAFile,
		Insecure:      a.Insecure,
		UserAgent:     a.UserAgent,
		WrapTransport: a.WrapTransport,
	}
	def, err := oci.NewClient(base)
	if err != nil {
		return nil, err
	}
	r := &Registries{def: def, hosts: map[string]*oci.Client{}}
	for _, reg := range regs {
		o := base
		o.Insecure = a.Insecure || reg.Insecure
		if reg.CAFile != "" {
			o.CAFiles = []string{reg.CAFile}
		}
		c, err := oci.NewClient(o)
		if err != nil {
			return nil, fmt.Errorf("registry %s: %w", reg.Host, err)
		}
		r.hosts[strings.ToLower(reg.Host)] = c
	}
	return r, nil
}

// Repository opens the repository name ("host/path") with its host's
// settings. Nothing is deleted through it: the referrers fallback index it
// updates at a registry without the referrers API replaces the old one
// without deleting it.
func (r *Registries) Repository(name string) (*remote.Repository, error) {
	ref, err := oci.ParseReference(name) // its errors name the repository
	if err != nil {
		return nil, err
	}
	c, ok := r.hosts[strings.ToLower(ref.Registry)]
	if !ok {
		c = r.def
	}
	repo, err := c.Repository(ref)
	if err != nil {
		return nil, err
	}
	repo.SkipReferrersGC = true
	return repo, nil
}
