package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/mirror"
	"github.com/berth-dev/berth/source/oci"
)

// Registry mirrors (the configuration's registries:) apply to every fetch
// of a source, with the rules of package mirror:
//
//   - a tag is listed and resolved only on the mirrors whose set allows
//     tags, in order, then at the source when sourceFallback allows it; a
//     digest-only mirror never sees a tag request;
//   - the manifest of the chosen digest, and then its layer, are fetched by
//     digest from the endpoints in order: the first that answers serves it;
//     one that does not have it, cannot be reached or refuses the
//     credentials passes to the next; content that does not match its
//     digest is refused at once, never fetched again elsewhere;
//   - the signatures (referrers bundles and the legacy .sig tag, both named
//     after the digest, so digest-only mirrors serve them) are read from the
//     endpoint that served the manifest, then from the others: a signature
//     only counts for the exact digest, wherever it is stored;
//   - the anti-downgrade rule judges what a tag resolved to, whichever
//     endpoint resolved it, so a mirror serving a stale tag is refused.
//
// The endpoint that served each fetch is recorded (store.Via), shown by
// `berth status` and logged.

// endpoint is one place a source's content is fetched from: the source
// registry, or a mirror with the reference rewritten to it.
type endpoint struct {
	ref    oci.Reference
	mirror string // the mirror prefix; "" for the source registry
	bundle string // the bundle file of a bundle source
}

// via is the endpoint's store.Via value.
func (e endpoint) via() string {
	switch {
	case e.bundle != "":
		return store.ViaBundle
	case e.mirror == "":
		return store.ViaSource
	}
	return e.mirror
}

// String names the endpoint in logs and errors.
func (e endpoint) String() string {
	switch {
	case e.bundle != "":
		return "bundle " + e.bundle
	case e.mirror == "":
		return "source " + e.ref.Registry
	}
	return "mirror " + e.mirror
}

// newMirrors builds the resolver of the configuration's registries:.
func newMirrors(regs []config.Registry) (*mirror.Resolver, error) {
	if len(regs) == 0 {
		return nil, nil
	}
	sets := make([]mirror.Set, len(regs))
	for i, r := range regs {
		sets[i] = mirror.Set{Source: r.Source, Mirrors: r.Mirrors, AllowTags: r.AllowTags, SourceFallback: r.SourceFallback}
	}
	return mirror.New(sets)
}

// mirrored reports whether registry mirrors apply to the source.
func (s *source) mirrored() bool {
	if s.mirrors == nil || s.file != "" {
		return false
	}
	_, ok := s.mirrors.Source(s.ref.Repo())
	return ok
}

// endpoints lists where to fetch ref from, in order. A ref without a
// digest is a tag operation (a ref with neither tag nor digest lists the
// repository's tags); with a digest, a fetch by digest. The source's own
// reference is kept as it is for the source endpoint.
func (s *source) endpoints(ref oci.Reference) ([]endpoint, error) {
	if !s.mirrored() {
		return []endpoint{{ref: ref}}, nil
	}
	key := strings.TrimPrefix(ref.String(), oci.Scheme)
	if ref.Tag == "" && ref.Digest == "" {
		key += ":latest" // a tag operation: listing the tags
	}
	eps, err := s.mirrors.Resolve(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.ref, err)
	}
	out := make([]endpoint, 0, len(eps))
	for _, ep := range eps {
		if ep.Mirror == "" {
			out = append(out, endpoint{ref: ref})
			continue
		}
		r, err := oci.ParseReference(ep.Ref)
		if err != nil {
			return nil, fmt.Errorf("mirror %s of %s: %w", ep.Mirror, ref, err)
		}
		if ref.Tag == "" {
			r.Tag = ""
		}
		out = append(out, endpoint{ref: r, mirror: ep.Mirror})
	}
	return out, nil
}

// startAt returns eps with eps[i] first, the others in their order.
func startAt(eps []endpoint, i int) []endpoint {
	if i <= 0 || i >= len(eps) {
		return eps
	}
	out := make([]endpoint, 0, len(eps))
	out = append(out, eps[i])
	out = append(out, eps[:i]...)
	return append(out, eps[i+1:]...)
}

// indexOf returns the index of the endpoint whose via is v, 0 when none.
func indexOf(eps []endpoint, v string) int {
	for i, e := range eps {
		if e.via() == v {
			return i
		}
	}
	return 0
}

// firstServed runs fetch on every endpoint in order until one succeeds and
// returns that endpoint's index. An error for which final reports true
// (content refused: a digest mismatch, a size cap) ends the search at
// once; any other error passes to the next endpoint, logged. With the
// source as the only endpoint its error is returned as it is; otherwise an
// error naming what was tried on each.
func (a *Agent) firstServed(ctx context.Context, name, what string, eps []endpoint, fetch func(endpoint) error, final func(error) bool) (int, error) {
	var errs []error
	for i, ep := range eps {
		err := fetch(ep)
		if err == nil {
			if i > 0 {
				a.log.Info("served by a later registry", "source", name, "fetch", what, "endpoint", ep.String())
			}
			return i, nil
		}
		if (len(eps) == 1 && ep.mirror == "") || ctx.Err() != nil || (final != nil && final(err)) {
			return i, err
		}
		if i < len(eps)-1 {
			a.log.Warn("fetch failed, trying the next registry", "source", name, "fetch", what, "endpoint", ep.String(), "error", err)
		}
		errs = append(errs, fmt.Errorf("[%s] %w", ep, err))
	}
	return -1, &triedError{what: what, errs: errs, noFallback: !hasSource(eps)}
}

func hasSource(eps []endpoint) bool {
	for _, e := range eps {
		if e.mirror == "" {
			return true
		}
	}
	return false
}

// triedError is the failure of a fetch that no endpoint served: every
// endpoint's error, on one line, in the order tried.
type triedError struct {
	what       string
	errs       []error
	noFallback bool // the source registry was not an endpoint
}

func (e *triedError) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	s := fmt.Sprintf("%s: no registry served it; tried in order: %s", e.what, strings.Join(msgs, "; "))
	if e.noFallback {
		s += " (the source registry itself is not tried: sourceFallback is off for it in registries:)"
	}
	return s
}

func (e *triedError) Unwrap() []error { return e.errs }

// allAre reports whether every error err joins matches target (err itself
// when it joins none).
func allAre(err, target error) bool {
	var te *triedError
	if !errors.As(err, &te) {
		return errors.Is(err, target)
	}
	for _, e := range te.errs {
		if !errors.Is(e, target) {
			return false
		}
	}
	return len(te.errs) > 0
}
