package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/bundle"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

// A bundle source (url: file:///media/usb/site.tar) is reconciled like a
// registry source whose registry is the bundle: the bundle's transport
// (bundle.Transport) serves its content under the original repository
// names, so the same client resolves, verifies (same policy), checks
// against downgrades and pulls the state artifact the bundle was made
// from. Before the revision is applied, the bundle's images are loaded
// into the appliers that take them (ImageLoader: the Docker Engine of the
// Compose applier) and, with bundles.pushTo, everything it holds is pushed
// to a local registry.
//
// The file is opened again only when it changed (size or modification
// time): a steady poll of an unchanged bundle reads nothing but its
// metadata. A missing file is an error that leaves the device as it is.

// origin is where one reconcile fetches from: the source's registry and
// its mirrors, or an opened bundle.
type origin struct {
	s      *source
	ref    oci.Reference // the repository (no tag, no digest)
	remote *deliver.Remote
	// Bundle sources only.
	bundle *bundle.Bundle // nil until opened (not needed for an unchanged poll)
	root   oci.Reference  // the bundle's root: tag and digest
	key    fileKey        // the file opened or recorded
}

// fileKey identifies one version of a bundle file.
type fileKey struct {
	size  int64
	mtime time.Time
}

// bundleCache is what the last poll of a bundle source learnt: the root
// of the file it opened, or why the file could not be used.
type bundleCache struct {
	key  fileKey
	root oci.Reference
	err  error
}

// origin prepares the fetches of one reconcile of s. For a bundle source
// it opens the file when it changed since it was last opened; close the
// origin when done.
func (a *Agent) origin(ctx context.Context, s *source) (*origin, error) {
	if s.file == "" {
		return &origin{s: s, ref: s.ref, remote: s.remote}, nil
	}
	fi, err := os.Stat(s.file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("bundle %s: %w (is the medium mounted? the device keeps what it runs)", s.file, err)
		}
		return nil, fmt.Errorf("bundle %s: %w", s.file, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fail(store.OutcomeRefused, "bundle %s: not a regular file", s.file)
	}
	key := fileKey{size: fi.Size(), mtime: fi.ModTime()}
	o := &origin{s: s, key: key}
	if c := s.bundleCache; c != nil && c.key == key {
		if c.err != nil {
			return nil, c.err
		}
		o.root, o.ref = c.root, c.root.WithTag("")
		return o, nil
	}
	if err := a.openBundle(ctx, o); err != nil {
		return nil, err
	}
	return o, nil
}

// openBundle opens the bundle file and prepares a client reading it.
func (a *Agent) openBundle(ctx context.Context, o *origin) error {
	s := o.s
	s.bundleCache = nil
	b, err := bundle.Open(ctx, s.file)
	if err != nil {
		if refused(err) {
			err = fail(store.OutcomeRefused, "bundle %s: %w", s.file, err)
			s.bundleCache = &bundleCache{key: o.key, err: err} // not read again until it changes
			return err
		}
		return fmt.Errorf("bundle %s: %w", s.file, err)
	}
	remote, root, err := b.Remote(oci.Options{UserAgent: "berth-agent/" + a.version})
	if err != nil {
		b.Close()
		if refused(err) {
			err = fail(store.OutcomeRefused, "bundle %s: %w", s.file, err)
			s.bundleCache = &bundleCache{key: o.key, err: err}
		}
		return err
	}
	remote.Timeout, remote.Log = s.remote.Timeout, s.remote.Log
	if o.root.Digest != "" && o.root.Digest != root.Digest {
		b.Close()
		return fmt.Errorf("bundle %s changed while it was read: trying again at the next poll", s.file)
	}
	o.bundle, o.remote, o.root, o.ref = b, remote, root, root.WithTag("")
	s.bundleCache = &bundleCache{key: o.key, root: root}
	a.log.Info("bundle opened", "source", s.cfg.Name, "file", s.file, "root", root.String(), "images", len(b.Images()))
	return nil
}

// open makes sure the bundle of a bundle source is open: an unchanged
// file is only opened once its content is needed.
func (a *Agent) open(ctx context.Context, o *origin) error {
	if o.s.file == "" || o.bundle != nil {
		return nil
	}
	return a.openBundle(ctx, o)
}

// close releases the bundle, if one was opened.
func (o *origin) close() {
	if o != nil && o.bundle != nil {
		o.bundle.Close()
	}
}

// unload hands the bundle's content to the device before its state is
// applied: pushed to bundles.pushTo, loaded into the appliers that take
// images.
func (a *Agent) unload(ctx context.Context, name string, o *origin) error {
	b := o.bundle
	if a.pushClient != nil {
		res, err := b.Push(ctx, a.pushClient, bundle.PushOptions{Target: a.cfg.Bundles.PushTo, Log: a.log.With("source", name)})
		if err != nil && !errors.Is(err, bundle.ErrIncomplete) {
			if refused(err) {
				return fail(store.OutcomeRefused, "push bundle %s to %s: %w", b.Path(), a.cfg.Bundles.PushTo, err)
			}
			return fail(store.OutcomeFailed, "push bundle %s to %s: %w", b.Path(), a.cfg.Bundles.PushTo, err)
		}
		if err != nil {
			a.log.Warn("bundle pushed incompletely", "source", name, "target", a.cfg.Bundles.PushTo, "error", err)
		}
		a.log.Info("bundle pushed", "source", name, "target", a.cfg.Bundles.PushTo,
			"blobs", res.Blobs.Pushed, "blobsSkipped", res.Blobs.Skipped, "manifests", res.Manifests.Pushed)
	}
	images := b.Images()
	if len(images) == 0 {
		return nil
	}
	for _, ap := range a.appliers {
		l, ok := ap.(ImageLoader)
		if !ok {
			continue
		}
		if err := l.LoadImages(ctx, images, b.Transport()); err != nil {
			if refused(err) {
				return fail(store.OutcomeRefused, "bundle %s: %s: %w", b.Path(), ap.Kind(), err)
			}
			return fail(store.OutcomeFailed, "bundle %s: %s: load images: %w", b.Path(), ap.Kind(), err)
		}
	}
	return nil
}
