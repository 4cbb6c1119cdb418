package statement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/policy/rollout"
)

// Defaults of Options.
const (
	// DefaultMaxStatements is how many statements Read considers.
	DefaultMaxStatements = 64
	// DefaultMaxSize caps a statement's manifest and its bundle, each.
	DefaultMaxSize = 256 << 10
)

const (
	// bundleTypePrefix starts the media type of sigstore bundles, the
	// artifactType of statements (and of cosign signatures).
	bundleTypePrefix = "application/vnd.dev.sigstore.bundle"
	// predicateAnnotation names the predicate type on a bundle referrer.
	predicateAnnotation = "dev.sigstore.bundle.predicateType"
	// emptyConfigType is the config media type of bundle referrers.
	emptyConfigType = "application/vnd.oci.empty.v1+json"
	// createdAnnotation is the (unsigned) time a referrer was written.
	createdAnnotation = "org.opencontainers.image.created"
)

// Sign signs s with sv and attaches it to digest, which must be s.Digest.
func Sign(ctx context.Context, digest name.Digest, s Statement, sv signature.SignerVerifier, ropts ...remote.Option) error {
	pred, err := predicateFor(digest, s)
	if err != nil {
		return err
	}
	return cosign.Attest(ctx, digest, sv, PredicateType, pred, ropts...)
}

// Attach attaches to digest a statement bundle signed elsewhere, such as
// keyless in CI. Its content is checked (a statement of PredicateType
// naming digest, whose predicate parses) but not its signature: devices
// verify it with their trust policy.
func Attach(ctx context.Context, digest name.Digest, bundleJSON []byte, ropts ...remote.Option) error {
	var b struct {
		DSSE struct {
			Payload []byte `json:"payload"`
		} `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(bundleJSON, &b); err != nil {
		return fmt.Errorf("statement bundle: %w", err)
	}
	var st struct {
		Predicate json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(b.DSSE.Payload, &st); err != nil {
		return fmt.Errorf("statement bundle: payload: %w", err)
	}
	s, err := Parse(st.Predicate)
	if err != nil {
		return fmt.Errorf("statement bundle: %w", err)
	}
	if s.Digest != digest.DigestStr() {
		return fmt.Errorf("statement bundle names %s, not %s", s.Digest, digest.DigestStr())
	}
	return cosign.AttachAttestation(ctx, digest, bundleJSON, PredicateType, ropts...)
}

// predicateFor checks that s is about digest and returns its predicate.
func predicateFor(digest name.Digest, s Statement) ([]byte, error) {
	if s.Digest != digest.DigestStr() {
		return nil, fmt.Errorf("statement about %s attached to %s", s.Digest, digest.DigestStr())
	}
	return s.Predicate()
}

// Options bound what Read fetches.
type Options struct {
	// MaxStatements is how many statements are considered, the newest
	// first by their referrer's (unsigned) created annotation; default
	// DefaultMaxStatements.
	MaxStatements int
	// MaxSize caps each statement's manifest and bundle; default
	// DefaultMaxSize.
	MaxSize int64
}

// Verified is a statement that verified.
type Verified struct {
	Statement
	// Signer is who signed it: a key name or a keyless identity.
	Signer string `json:"signer"`
	// Referrer is the digest of the referrer manifest that holds it.
	Referrer string `json:"referrer"`
}

// Ignored is a statement Read did not honour.
type Ignored struct {
	// Referrer is the digest of the referrer manifest.
	Referrer string `json:"referrer"`
	// Reason says why: unsigned, not signed by a trusted signer, copied
	// from another release, malformed, too large.
	Reason string `json:"reason"`
	// Err is the error, for errors.Is (cosign.ErrDigestMismatch for a
	// copy, cosign.ErrKeyMismatch or cosign.ErrIdentityMismatch for an
	// untrusted signature).
	Err error `json:"-"`
}

// Result is what Read found.
type Result struct {
	// Latest is the newest valid statement by signed time (ties: abort,
	// then pause, then resume); nil when there is none.
	Latest *Verified `json:"latest,omitempty"`
	// Valid are the valid statements, newest first.
	Valid []Verified `json:"valid,omitempty"`
	// Ignored are the statements not honoured, with why.
	Ignored []Ignored `json:"ignored,omitempty"`
	// Skipped counts the statements beyond MaxStatements, not read.
	Skipped int `json:"skipped,omitempty"`
}

// Action is the action of the newest valid statement; rollout.None when
// there is none.
func (r *Result) Action() rollout.Action {
	if r == nil || r.Latest == nil {
		return rollout.None
	}
	return r.Latest.Action
}

// Read lists the statements attached to digest, verifies each with p and
// returns what it found. A registry failure (listing, or fetching a
// statement) is an error: a statement may hide behind it, so the caller
// must not take the absence of one for granted. Statements that are
// unsigned, not signed as p accepts, malformed, oversized or about another
// digest are Ignored, never errors.
func Read(ctx context.Context, digest name.Digest, p cosign.Policy, o Options, ropts ...remote.Option) (*Result, error) {
	v, err := cosign.NewAttestationVerifier(p)
	if err != nil {
		return nil, fmt.Errorf("statements of %s: %w", digest, err)
	}
	if o.MaxStatements <= 0 {
		o.MaxStatements = DefaultMaxStatements
	}
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	opts := append(slices.Clone(ropts), remote.WithContext(ctx), remote.WithReferrersTagFallback(true))
	// One puller for every request: one /v2/ ping and one token, not one
	// per request.
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, fmt.Errorf("statements of %s: %w", digest, err)
	}
	opts = append(opts, remote.Reuse(puller))
	idx, err := remote.Referrers(digest, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: listing the referrers of %s: %w", ErrRegistry, digest, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: listing the referrers of %s: %w", ErrRegistry, digest, err)
	}
	r := &Result{}
	cands, err := candidates(digest, im.Manifests, o, opts, r)
	if err != nil {
		return nil, err
	}
	for _, desc := range cands {
		bundle, err := fetchBundle(digest, desc, o.MaxSize, opts)
		if err != nil {
			if errors.Is(err, ErrRegistry) {
				return nil, err
			}
			r.ignore(desc, err)
			continue
		}
		a, err := v.Verify(bundle, digest, PredicateType)
		if err != nil {
			r.ignore(desc, err)
			continue
		}
		s, err := Parse(a.Predicate)
		switch {
		case err != nil:
			r.ignore(desc, err)
			continue
		case s.Digest != digest.DigestStr():
			r.ignore(desc, fmt.Errorf("%w: the statement signed by %s names %s", cosign.ErrDigestMismatch, a.Signer(), s.Digest))
			continue
		}
		r.Valid = append(r.Valid, Verified{Statement: s, Signer: a.Signer(), Referrer: desc.Digest.String()})
	}
	slices.SortStableFunc(r.Valid, func(a, b Verified) int {
		switch {
		case a.Newer(b.Statement):
			return -1
		case b.Newer(a.Statement):
			return 1
		}
		return strings.Compare(a.Referrer, b.Referrer)
	})
	if len(r.Valid) > 0 {
		r.Latest = &r.Valid[0]
	}
	return r, nil
}

func (r *Result) ignore(desc v1.Descriptor, err error) {
	r.Ignored = append(r.Ignored, Ignored{Referrer: desc.Digest.String(), Reason: reason(err), Err: err})
}

// reason words why a statement is ignored.
func reason(err error) string {
	switch {
	case errors.Is(err, cosign.ErrDigestMismatch):
		return "copied from another release: " + err.Error()
	case errors.Is(err, cosign.ErrKeyMismatch):
		return "unsigned or not signed by a trusted signer: " + err.Error()
	case errors.Is(err, cosign.ErrIdentityMismatch):
		return "signed by an identity not allowed: " + err.Error()
	}
	return "malformed: " + err.Error()
}

// candidates picks the referrers that are statements, at most
// o.MaxStatements, the newest first by their unsigned created annotation.
// A referrer without the predicate annotation (a registry may drop
// annotations) is looked at: its manifest says.
func candidates(digest name.Digest, descs []v1.Descriptor, o Options, opts []remote.Option, r *Result) ([]v1.Descriptor, error) {
	var out []v1.Descriptor
	for _, d := range descs {
		switch at := d.ArtifactType; {
		case at == "", at == emptyConfigType, strings.HasPrefix(at, bundleTypePrefix):
		default:
			continue // registries report the artifactType or the config's media type
		}
		pt, ok := d.Annotations[predicateAnnotation]
		if !ok {
			m, err := fetchManifest(digest, d, o.MaxSize, opts)
			if errors.Is(err, ErrRegistry) {
				return nil, err
			}
			if err != nil || !strings.HasPrefix(m.ArtifactType, bundleTypePrefix) {
				continue // not a bundle: not ours
			}
			pt = m.Annotations[predicateAnnotation]
			if d.Annotations == nil {
				d.Annotations = map[string]string{}
			}
			d.Annotations[createdAnnotation] = m.Annotations[createdAnnotation]
		}
		if pt == PredicateType {
			out = append(out, d)
		}
	}
	slices.SortStableFunc(out, func(a, b v1.Descriptor) int {
		return strings.Compare(b.Annotations[createdAnnotation], a.Annotations[createdAnnotation])
	})
	if len(out) > o.MaxStatements {
		r.Skipped = len(out) - o.MaxStatements
		out = out[:o.MaxStatements]
	}
	return out, nil
}

// fetchManifest fetches a referrer manifest, at most max bytes.
func fetchManifest(digest name.Digest, d v1.Descriptor, max int64, opts []remote.Option) (*v1.Manifest, error) {
	if d.Size > max {
		return nil, fmt.Errorf("manifest is %d bytes, at most %d", d.Size, max)
	}
	got, err := remote.Get(digest.Context().Digest(d.Digest.String()), opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: fetching statement %s of %s: %w", ErrRegistry, d.Digest, digest, err)
	}
	if int64(len(got.Manifest)) > max {
		return nil, fmt.Errorf("manifest is %d bytes, at most %d", len(got.Manifest), max)
	}
	if got.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("a %s, not an OCI manifest", got.MediaType)
	}
	var m v1.Manifest
	if err := json.Unmarshal(got.Manifest, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

// fetchBundle fetches the bundle layer of a statement referrer, at most max
// bytes, digest-checked.
func fetchBundle(digest name.Digest, d v1.Descriptor, max int64, opts []remote.Option) ([]byte, error) {
	m, err := fetchManifest(digest, d, max, opts)
	if err != nil {
		return nil, err
	}
	if len(m.Layers) != 1 || !strings.HasPrefix(string(m.Layers[0].MediaType), bundleTypePrefix) {
		return nil, errors.New("unsigned: not a single sigstore bundle layer")
	}
	ld := m.Layers[0]
	if ld.Size > max {
		return nil, fmt.Errorf("bundle is %d bytes, at most %d", ld.Size, max)
	}
	blob := digest.Context().Digest(ld.Digest.String())
	layer, err := remote.Layer(blob, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: fetching statement bundle %s: %w", ErrRegistry, blob, err)
	}
	rc, err := layer.Compressed() // as stored; digest-checked at EOF
	if err != nil {
		return nil, fmt.Errorf("%w: fetching statement bundle %s: %w", ErrRegistry, blob, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading statement bundle %s: %w", ErrRegistry, blob, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("bundle exceeds %d bytes", max)
	}
	return b, nil
}
