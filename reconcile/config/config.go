// Package config loads and validates the agent's configuration file.
//
// The file, /etc/berth/agent.yaml by default, lists the sources a device
// tracks and how the agent runs:
//
//	stateDir: /var/lib/berth          # default
//	keepRevisions: 5                  # default 5, >= 1
//	allowDowngrade: false
//	listen: 127.0.0.1:9797            # also serve the local API on TCP
//	socket: /var/lib/berth/berth.sock # default <stateDir>/berth.sock
//	log: {format: text, level: info} # text|json, debug|info|warn|error
//	extensions: [usbguard]            # extensions enabled on this device
//	sources:
//	  - name: line-3                  # a DNS label, unique
//	    url: oci://registry.plant.local/fleet/line-3
//	    ref: {semver: ">=1.4.0 <2.0.0"}  # or {tag: stable} or {digest: sha256:...}
//	    # or, the Flux ImagePolicy model, instead of ref:
//	    # filter: {pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)$', extract: '$ts', order: numerical}
//	    interval: 1m                  # default 5m, >= 1s
//	    timeout: 30s                  # default 1m
//	    jitter: 0.1                   # default 0.1, in [0, 0.5]
//	    verify: {keys: [/etc/berth/cosign.pub]}
//	    credentials: {dockerConfig: /etc/berth/docker/config.json}
//	    caFile: /etc/berth/plant-ca.pem
//	  - name: usb                     # a bundle: berth bundle create
//	    url: file:///media/usb/site.tar
//	    verify: {keys: [/etc/berth/cosign.pub]}
//	registries:
//	  - source: ghcr.io/acme
//	    mirrors: [registry.plant.local/acme]
//	    allowTags: false              # default: mirrors serve digests only
//	    sourceFallback: true          # default; false in any entry wins
//	bundles: {pushTo: localhost:5000} # push bundles' images to a local registry
//	apply:
//	  compose: {host: unix:///var/run/docker.sock}
//	  helm: {kubeconfig: /etc/rancher/k3s/k3s.yaml}
//	device:                           # for staged rollouts
//	  id: press-07                    # default: derived from /etc/machine-id
//	  labels: {ring: canary, line: "3"}
//	windows:                          # also per source, field by field
//	  apply:                          # always (default) or a list of windows
//	    - {days: [mon, tue, wed, thu, fri], start: "22:00", end: "05:00", timezone: Europe/Berlin}
//	  download: always
//	report:                           # push metrics to Prometheus (see Report)
//	  prometheus: {remoteWrite: https://metrics.plant.local/api/v1/write}
//
// Parsing is strict: unknown fields, duplicate keys, values of the wrong
// type and invalid values are errors, each located at a line of the file and
// named by its field path, and all of them are reported at once:
//
//	agent.yaml:12: sources[0].ref: give exactly one of tag, digest or semver
//
// Relative paths in the file are taken relative to the file's folder. Files
// the configuration names need not exist when it is parsed; Check verifies
// that they do and that they are usable.
package config

import (
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/berth-dev/berth/internal/yamlstrict"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/selector"
)

// Defaults and limits.
const (
	// DefaultPath is where the agent looks for its configuration.
	DefaultPath = "/etc/berth/agent.yaml"
	// MaxFileSize is the largest configuration Load reads.
	MaxFileSize = 1 << 20
	// DefaultStateDir is the state folder when stateDir is not set.
	DefaultStateDir = "/var/lib/berth"
	// SocketName is the API socket in the state folder when socket is not
	// set.
	SocketName = "berth.sock"
	// DefaultKeepRevisions is the number of revisions kept per source.
	DefaultKeepRevisions = 5
	// DefaultLogFormat is the log format when log.format is not set.
	DefaultLogFormat = "text"
	// DefaultLogLevel is the log level when log.level is not set.
	DefaultLogLevel = "info"
	// DefaultInterval is a source's interval when it sets none.
	DefaultInterval = 5 * time.Minute
	// MinInterval is the shortest interval allowed.
	MinInterval = time.Second
	// DefaultTimeout is a source's timeout when it sets none.
	DefaultTimeout = time.Minute
	// MinTimeout is the shortest timeout allowed.
	MinTimeout = time.Second
	// ReconcileTimeoutFactor makes a source's default reconcileTimeout from
	// its timeout: room for the resolve, the manifest, the signatures and
	// the layer, each bounded by timeout, and retries of mirrors.
	ReconcileTimeoutFactor = 10
	// DefaultBundlesTimeout bounds handing a bundle's images to the device
	// (the push to bundles.pushTo, the loads into the Docker Engine).
	DefaultBundlesTimeout = 30 * time.Minute
	// DefaultJitter is a source's jitter when it sets none.
	DefaultJitter = 0.1
	// MaxJitter is the largest jitter allowed.
	MaxJitter = 0.5
	// DefaultComposeWaitTimeout is apply.compose.waitTimeout when not set.
	DefaultComposeWaitTimeout = 2 * time.Minute
	// maxSocketPath is the longest path a unix socket can be bound at on
	// Linux (sun_path is 108 bytes, NUL included).
	maxSocketPath = 107
)

// Error is one problem of a configuration: its File, Line (0 when the
// problem concerns the whole file), Field path (such as sources[0].ref) and
// Msg. Its Error method returns "file:line: field: msg".
type Error = yamlstrict.Error

// Config is a parsed and validated agent configuration, its defaults filled
// in.
type Config struct {
	// File is the name the configuration was parsed under: the path given
	// to Load.
	File string
	// StateDir holds revisions, state.json and the API socket. Default
	// DefaultStateDir.
	StateDir string
	// KeepRevisions is how many revisions are kept per source for rollback,
	// at least 1. Default DefaultKeepRevisions.
	KeepRevisions int
	// AllowDowngrade lets the agent apply a revision older than the applied
	// one without an explicit rollback.
	AllowDowngrade bool
	// Listen is a TCP address (host:port) on which the local API is also
	// served; empty: the unix socket only. The API has no authentication:
	// keep it on a loopback or otherwise protected address.
	Listen string
	// Socket is the unix socket of the local API. Default
	// <StateDir>/SocketName.
	Socket string
	// Log configures the agent's logs.
	Log Log
	// Extensions are the names of the extensions of the desired state that
	// are enabled on this device.
	Extensions []string
	// Sources are the OCI repositories the device tracks, at least one,
	// in file order.
	Sources []Source
	// Registries are mirror settings, in file order; several may name the
	// same source, and their mirrors then compose in that order.
	Registries []Registry
	// Bundles configure what the agent does with the content of bundle
	// (file://) sources besides applying their state.
	Bundles Bundles
	// Apply configures the appliers.
	Apply Apply
	// Margo, when set, makes the device a Margo WFM client (see Margo).
	Margo *Margo
	// Device is the device's identity: see Device.Identity.
	Device Device
	// Windows are the update windows of the sources that set none.
	Windows Windows
	// Report configures status reporting (report.prometheus).
	Report Report

	// lines are the lines of the fields that name files, by field path, for
	// the messages of Check.
	lines map[string]int
	// mirrors is the resolver of Registries, made once (see Mirrors);
	// mirrorsOf is the copy of Registries it was made of.
	mirrors    *mirror.Resolver
	mirrorsErr error
	mirrorsOf  []Registry
}

// Mirrors returns the resolver of Registries, the one every fetch of the
// agent goes through (sources, charts, images): nil when there are none.
// It is made on the first call (Parse makes it) and shared after that, as
// long as Registries does not change.
func (c *Config) Mirrors() (*mirror.Resolver, error) {
	if len(c.Registries) == 0 {
		return nil, nil
	}
	same := slices.EqualFunc(c.mirrorsOf, c.Registries, func(x, y Registry) bool {
		return x.Source == y.Source && slices.Equal(x.Mirrors, y.Mirrors) && x.AllowTags == y.AllowTags && x.SourceFallback == y.SourceFallback
	})
	if !same || (c.mirrors == nil && c.mirrorsErr == nil) {
		c.mirrorsOf = slices.Clone(c.Registries)
		for i := range c.mirrorsOf {
			c.mirrorsOf[i].Mirrors = slices.Clone(c.mirrorsOf[i].Mirrors)
		}
		sets := make([]mirror.Set, len(c.Registries))
		for i, r := range c.Registries {
			sets[i] = mirror.Set{Source: r.Source, Mirrors: r.Mirrors, AllowTags: r.AllowTags, SourceFallback: r.SourceFallback}
		}
		c.mirrors, c.mirrorsErr = mirror.New(sets)
	}
	return c.mirrors, c.mirrorsErr
}

// Log configures the agent's logs.
type Log struct {
	// Format is "text" or "json". Default DefaultLogFormat.
	Format string
	// Level is "debug", "info", "warn" or "error". Default DefaultLogLevel.
	Level string
}

// FileScheme is the URL scheme of bundle sources.
const FileScheme = "file://"

// Source is an OCI repository, or a bundle file, the agent tracks.
//
// A bundle source (url: file:///media/usb/site.tar, see package bundle)
// applies the state artifact the bundle was made from: it is verified,
// checked against downgrades, pulled and applied exactly like a registry
// source's, with the images and charts the bundle carries, and nothing is
// fetched from a registry. It takes name, url, interval, timeout, jitter,
// suspend, verify (or insecureSkipVerify), layerSelector and limits; ref
// and filter do not apply to it. credentials, caFile and insecure are
// accepted but play no part in reading the bundle: they concern registries
// the device may still reach (the Compose applier pulls the images a
// bundle lacks with the first credentials the sources give).
type Source struct {
	// Name is unique among sources: a DNS label of at most 63 characters.
	Name string
	// URL is oci://HOST[:PORT]/REPOSITORY, without tag or digest, or
	// file:///PATH for a bundle.
	URL string
	// Registry is the HOST[:PORT] of URL; empty for a bundle.
	Registry string
	// Repository is the REPOSITORY of URL; empty for a bundle.
	Repository string
	// File is the bundle file of a file:// URL (an absolute path); empty
	// for a registry source.
	File string
	// Ref says what to track. Exactly one of Tag, Digest and Semver is set,
	// unless Filter is set: then Tag and Digest are empty and Semver, if
	// set, bounds the versions the filter extracts. All are empty for a
	// bundle.
	Ref Ref
	// Filter, when set, picks the tag with the Flux ImagePolicy model.
	Filter *Filter
	// LayerSelector picks the layer to extract.
	LayerSelector LayerSelector
	// Interval between two reconciles, at least MinInterval. Default
	// DefaultInterval.
	Interval time.Duration
	// Timeout bounds each registry call of one reconcile. Default
	// DefaultTimeout.
	Timeout time.Duration
	// ReconcileTimeout is the deadline of a reconcile's steps up to the
	// switch (resolve, verify, download, extract). Applies are bounded by
	// the appliers' own timeouts, a bundle's images by Bundles.Timeout.
	// Default ReconcileTimeoutFactor × Timeout.
	ReconcileTimeout time.Duration
	// Jitter is the fraction of Interval by which each wait is randomly
	// shortened or lengthened, in [0, MaxJitter]. Default DefaultJitter.
	Jitter float64
	// Suspend stops the reconciles of the source at start.
	Suspend bool
	// Verify is the trust policy; nil only with InsecureSkipVerify.
	Verify *Verify
	// InsecureSkipVerify applies artifacts without checking signatures; it
	// must be set explicitly when Verify is nil, and never with Verify.
	InsecureSkipVerify bool
	// Credentials for the registry.
	Credentials Credentials
	// CAFile is a PEM bundle of certificate authorities trusted for the
	// registry's TLS certificate, besides the system's.
	CAFile string
	// Insecure reaches the registry over plain HTTP.
	Insecure bool
	// Limits cap what an extraction writes.
	Limits Limits
	// Windows are the source's update windows: its own windows fields,
	// else the global ones.
	Windows Windows
}

// Ref is what a source tracks.
type Ref struct {
	// Tag is a tag, resolved to a digest at every reconcile.
	Tag string
	// Digest is a manifest digest, sha256:<64 hex>.
	Digest string
	// Semver is a Masterminds semver range; the highest version in range
	// among the repository's tags is tracked. A -0 suffix, as in
	// ">=1.4.0-0", admits pre-releases.
	Semver string
	// SemverFilter is a regular expression the tags must match to be
	// considered; it needs Semver.
	SemverFilter string
}

// Filter picks the tag with the Flux ImagePolicy model: the tags matching
// Pattern, ordered by the value Extract takes out of them.
type Filter struct {
	// Pattern is a regular expression, with named groups for Extract.
	Pattern string
	// Extract is the value ordered, such as "$ts"; empty: the whole tag.
	Extract string
	// Order is "semver", "numerical" or "alphabetical"; "semver" when the
	// ref sets a semver range.
	Order string
	// Direction is "asc" (the greatest value is the newest) or "desc".
	// Default "asc".
	Direction string
}

// LayerSelector picks the layer of the artifact to extract.
type LayerSelector struct {
	// MediaType of the layer; empty: the Flux content layer
	// (application/vnd.cncf.flux.content.v1.tar+gzip), else the only
	// tar+gzip layer.
	MediaType string
}

// Verify is a source's trust policy: at least one of Keys and Keyless is
// set, and a signature any of them accepts verifies.
type Verify struct {
	// Keys are PEM public key files (or env://VAR references).
	Keys []string
	// Keyless accepts Fulcio certificates issued to given identities.
	Keyless *Keyless
}

// Keyless is the keyless (Fulcio certificate) part of a trust policy,
// verified offline against a trusted root.
type Keyless struct {
	// TrustedRoot is a sigstore trusted_root.json file.
	TrustedRoot string
	// Identities are the signers accepted, at least one.
	Identities []Identity
}

// Identity is a keyless signer: regular expressions matched against the
// certificate's OIDC issuer and subject. They are not anchored for you.
type Identity struct {
	// Issuer matches the OIDC issuer.
	Issuer string
	// Subject matches the subject (e-mail, workflow URI...).
	Subject string
}

// Credentials say how to authenticate to a registry.
type Credentials struct {
	// DockerConfig is a Docker config.json (auths, credHelpers,
	// credsStore); empty: anonymous.
	DockerConfig string
}

// Limits cap what an extraction writes.
type Limits struct {
	// MaxSize caps the bytes extracted. Default archive.DefaultMaxSize.
	MaxSize int64
	// MaxFiles caps the entries extracted. Default archive.DefaultMaxFiles.
	MaxFiles int
}

// Registry lists mirrors of a registry or of part of one.
type Registry struct {
	// Source is a registry host, or host/path prefix, such as ghcr.io/acme.
	Source string
	// Mirrors serve the content of Source under the same paths, tried in
	// order; each is a host or host/path prefix.
	Mirrors []string
	// AllowTags lets the mirrors resolve tags; otherwise they serve pulls
	// by digest only, so that a stale mirror cannot roll a device back.
	AllowTags bool
	// SourceFallback tries Source itself when no mirror serves a request.
	// Default true. Several entries for one source fall back only when all
	// of them do: one sourceFallback: false keeps the device away from the
	// source (see package mirror).
	SourceFallback bool
}

// Bundles configure what the agent does with the images and charts of
// bundle sources. Without PushTo, the images are loaded into the Docker
// Engine of the Compose applier (when apply.compose is set).
type Bundles struct {
	// PushTo is a registry on the device or the site, REGISTRY[/PREFIX]
	// (localhost:5000, or registry.plant.local/site): before a bundle
	// source's revision is applied, everything the bundle holds is pushed
	// there, digests kept, each original repository host/path as
	// PushTo/path; for Kubernetes devices, whose cluster and Helm pull
	// from it through mirror settings (registries: here, the cluster's
	// own registry mirrors). Empty: nothing is pushed.
	PushTo string
	// Insecure reaches PushTo over plain HTTP.
	Insecure bool
	// CAFile is a PEM bundle of certificate authorities trusted for
	// PushTo's TLS certificate, besides the system's.
	CAFile string
	// Credentials for PushTo.
	Credentials Credentials
	// Timeout bounds handing a bundle's content to the device: the push to
	// PushTo and the image loads. Default DefaultBundlesTimeout.
	Timeout time.Duration
}

// Apply configures the appliers.
type Apply struct {
	// Compose configures the Docker Compose applier.
	Compose ComposeOptions
	// Helm configures the Helm applier.
	Helm HelmOptions
}

// ComposeOptions configure the Docker Compose applier.
type ComposeOptions struct {
	// Enabled is true when the configuration has an apply.compose block:
	// only then does the agent apply Compose apps.
	Enabled bool
	// Host is the Docker Engine, such as unix:///var/run/docker.sock;
	// empty: Docker's defaults (DOCKER_HOST, else the local socket).
	Host string
	// WaitTimeout bounds the wait for the services to be running. Default
	// DefaultComposeWaitTimeout.
	WaitTimeout time.Duration
	// EnvDir is a folder of environment files on the device, for values
	// kept out of the artifact (the Compose applier defines its layout);
	// empty: none.
	EnvDir string
}

// HelmOptions configure the Helm applier.
type HelmOptions struct {
	// Enabled is true when the configuration has an apply.helm block: only
	// then does the agent apply Helm apps.
	Enabled bool
	// Kubeconfig is the cluster's kubeconfig; empty: $KUBECONFIG, else
	// k3s's /etc/rancher/k3s/k3s.yaml (see apply/helm).
	Kubeconfig string
	// ValuesDir is a folder of values files on the device, for values kept
	// out of the artifact: <ValuesDir>/<app>.yaml goes over the app's
	// values; empty: /etc/berth/values (see apply/helm).
	ValuesDir string
}

// SelectorPolicy returns the tag policy of s for selector.New: its semver
// range and filter. It is meaningful only when s.Ref.Semver is set or
// s.Filter is not nil; Parse has validated it then.
func (s Source) SelectorPolicy() selector.Policy {
	p := selector.Policy{Semver: s.Ref.Semver, SemverFilter: s.Ref.SemverFilter}
	if f := s.Filter; f != nil {
		p.Pattern, p.Extract, p.Order, p.Direction = f.Pattern, f.Extract, f.Order, f.Direction
	}
	return p
}

// defaultLimits are the limits of a source that sets none.
var defaultLimits = Limits{MaxSize: archive.DefaultMaxSize, MaxFiles: archive.DefaultMaxFiles}

// Load reads the configuration file at path and parses it. When the file
// does not exist the error wraps fs.ErrNotExist.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("agent configuration: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read agent configuration %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("larger than %d bytes: is this the agent configuration?", MaxFileSize)}
	}
	return Parse(path, data)
}
