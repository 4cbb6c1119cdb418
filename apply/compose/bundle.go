package compose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/moby/client"

	"github.com/berth-dev/berth/source/oci"
)

// Images of a bundle source (the agent's ImageLoader) are loaded into
// the engine so that Apply needs no registry. The engine (Debian's Docker
// 20.10) loads `docker save` archives, not OCI layouts: each image, the
// manifest for the engine's platform when it is an index, is read through
// the bundle's transport with go-containerregistry (manifest, config and
// every layer checked against their digests while streamed) and written
// as a docker-save archive straight into ImageLoad, through a pipe.
//
// A loaded image has no RepoDigests, so the engine cannot find it by the
// digest the compose file pins. It is loaded under a local tag derived
// from that digest instead (BundleTag: repo:berth-sha256-<hex>), which
// ensureImage looks for when the pinned reference itself is not present;
// the image's ID is checked against the config digest of the manifest it
// was read from. Since the tag is derived from the manifest digest and the
// manifest is checked against it, the tag always names content of that
// digest (unless someone with access to the engine retags an image).

// bundleTagPrefix starts the tags of images loaded from bundles.
const bundleTagPrefix = "berth-"

// maxLoadMessage bounds one message of ImageLoad's answer, and
// maxLoadAnswer the whole answer (a quiet load answers a few hundred
// bytes).
const (
	maxLoadMessage = 1 << 20
	maxLoadAnswer  = 64 * maxLoadMessage
)

// BundleTag is the local reference an image pinned by digest is loaded
// under from a bundle: its repository (normalised: docker.io/library/nginx)
// tagged berth-<algorithm>-<hex> (berth-sha256-…). It is false for a
// reference without a digest.
func BundleTag(ref string) (string, bool) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", false
	}
	d, ok := named.(reference.Digested)
	if !ok {
		return "", false
	}
	tag := bundleTagPrefix + strings.Replace(d.Digest().String(), ":", "-", 1)
	if len(tag) > 128 {
		return "", false
	}
	return reference.TrimNamed(named).String() + ":" + tag, true
}

// LoadImages loads images (repo@sha256:…, as bundle.Bundle.Images lists
// them) into the engine from rt, skipping those present (by digest, or
// under their BundleTag). It implements the agent's ImageLoader (package reconcile).
func (a *Applier) LoadImages(ctx context.Context, images []string, rt http.RoundTripper) error {
	var plat *v1.Platform
	for _, ref := range images {
		tag, ok := BundleTag(ref)
		if !ok {
			return fmt.Errorf("bundle image %q: not a reference pinned by digest", ref)
		}
		if a.present(ctx, ref) || a.present(ctx, tag) {
			a.log.Debug("compose: bundle image present", "image", ref)
			continue
		}
		if plat == nil {
			p, err := a.platform(ctx)
			if err != nil {
				return err
			}
			plat = &p
		}
		if err := a.loadImage(ctx, ref, tag, *plat, rt); err != nil {
			return err
		}
	}
	return nil
}

// present reports whether the engine has ref.
func (a *Applier) present(ctx context.Context, ref string) bool {
	_, err := a.docker.ImageInspect(ctx, ref)
	return err == nil
}

// platform is the engine's platform, in OCI terms.
func (a *Applier) platform(ctx context.Context) (v1.Platform, error) {
	info, err := a.docker.Info(ctx, client.InfoOptions{})
	if err != nil {
		return v1.Platform{}, fmt.Errorf("docker engine %s: %w", a.opts.Host, err)
	}
	os := info.Info.OSType
	if os == "" {
		os = "linux"
	}
	arch, variant := ociArch(info.Info.Architecture)
	return v1.Platform{OS: os, Architecture: arch, Variant: variant}, nil
}

// ociArch maps the kernel's machine name (uname -m), which the engine
// reports, to the OCI architecture and variant.
func ociArch(machine string) (arch, variant string) {
	switch machine {
	case "x86_64", "amd64":
		return "amd64", ""
	case "aarch64", "arm64":
		return "arm64", ""
	case "armv7l", "armv7", "armhf":
		return "arm", "v7"
	case "armv6l", "armv6", "armel":
		return "arm", "v6"
	case "armv5tel", "armv5l":
		return "arm", "v5"
	case "i386", "i486", "i586", "i686", "x86":
		return "386", ""
	}
	return machine, "" // ppc64le, s390x, riscv64, mips64 match already
}

// loadImage reads ref (the manifest for plat when it is an index) through
// rt and loads it into the engine as tag.
func (a *Applier) loadImage(ctx context.Context, ref, tag string, plat v1.Platform, rt http.RoundTripper) error {
	d, err := name.NewDigest(ref)
	if err != nil {
		return fmt.Errorf("bundle image %q: %w", ref, err)
	}
	t, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("bundle image %q: local tag %q: %w", ref, tag, err)
	}
	img, err := remote.Image(d, remote.WithTransport(rt), remote.WithPlatform(plat), remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("bundle image %s (platform %s): %w", ref, plat, classifyLoad(err))
	}
	config, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("bundle image %s: %w", ref, classifyLoad(err))
	}
	a.log.Info("compose: loading bundle image", "image", ref, "tag", tag, "platform", plat.String())

	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := tarball.Write(t, img, pw)
		pw.CloseWithError(err)
		werr <- err
	}()
	loadErr := a.imageLoad(ctx, pr)
	pr.CloseWithError(errors.New("load ended")) // stops the writer if the engine gave up
	if err := <-werr; err != nil {
		// What the bundle gave is the first cause: an altered layer
		// makes the engine see a truncated archive.
		return fmt.Errorf("bundle image %s: %w", ref, classifyLoad(err))
	}
	if loadErr != nil {
		return fmt.Errorf("load bundle image %s into the docker engine %s: %w", ref, a.opts.Host, loadErr)
	}
	res, err := a.docker.ImageInspect(ctx, tag)
	if err != nil {
		return fmt.Errorf("bundle image %s: loaded, but %s is not in the engine: %w", ref, tag, err)
	}
	if res.ID != config.String() {
		return fmt.Errorf("bundle image %s: the engine loaded image %s under %s, want %s (the config of the manifest)", ref, res.ID, tag, config)
	}
	return nil
}

// imageLoad streams a docker-save archive into the engine and reads its
// answer to the end: the engine reports a failed load in the stream.
func (a *Applier) imageLoad(ctx context.Context, r io.Reader) error {
	resp, err := a.docker.ImageLoad(ctx, r, client.ImageLoadWithQuiet(true))
	if err != nil {
		return err
	}
	defer resp.Close()
	return readLoadAnswer(resp)
}

// readLoadAnswer reads the engine's answer to an image load, a stream of
// JSON messages, to its end: nil when no message reports an error. A
// message over maxLoadMessage or an answer over maxLoadAnswer is an error
// (the decoder would otherwise hold the message in memory whole, and a
// truncated answer could hide the error at its end).
func readLoadAnswer(r io.Reader) error {
	br := &boundedAnswer{r: r, total: maxLoadAnswer}
	dec := json.NewDecoder(br)
	for {
		br.msg = maxLoadMessage
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading the engine's answer: %w", err)
		}
		if msg.ErrorDetail != nil && msg.ErrorDetail.Message != "" {
			return errors.New(msg.ErrorDetail.Message)
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}

// boundedAnswer reads the engine's answer within msg bytes per message
// and total bytes in all.
type boundedAnswer struct {
	r          io.Reader
	msg, total int64
}

func (b *boundedAnswer) Read(p []byte) (int, error) {
	switch {
	case b.total <= 0:
		return 0, fmt.Errorf("the answer is over %d bytes", maxLoadAnswer)
	case b.msg <= 0:
		return 0, fmt.Errorf("a message is over %d bytes", maxLoadMessage)
	}
	if n := min(b.msg, b.total); int64(len(p)) > n {
		p = p[:n]
	}
	n, err := b.r.Read(p)
	b.msg -= int64(n)
	b.total -= int64(n)
	return n, err
}

// classifyLoad marks go-containerregistry's digest and size checks with
// oci.ErrDigestMismatch, so that the agent refuses the bundle.
func classifyLoad(err error) error {
	if err == nil || errors.Is(err, oci.ErrDigestMismatch) {
		return err
	}
	msg := err.Error()
	for _, s := range []string{"error verifying sha256 checksum", "error verifying size", "digest mismatch", "manifest digest:"} {
		if strings.Contains(msg, s) {
			return fmt.Errorf("%w: %w", oci.ErrDigestMismatch, err)
		}
	}
	return err
}

// bundleChoice returns the BundleTag of ref as a candidate when ref is
// pinned by digest.
func bundleChoice(ref string) (imageChoice, bool) {
	tag, ok := BundleTag(ref)
	if !ok {
		return imageChoice{}, false
	}
	return imageChoice{ref: tag}, true
}
