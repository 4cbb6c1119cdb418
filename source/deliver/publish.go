package deliver

import (
	"context"
	"fmt"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/publish"
)

// Signer signs what Publish pushes.
type Signer struct {
	// Key signs (cosign.LoadPrivateKey).
	Key signature.SignerVerifier
	// Format is where the signature is stored.
	Format cosign.Format
}

// Publish is the whole way out: it packs and pushes the folder o.Dir by
// digest (see publish.Push), signs that digest when s is not nil, and only
// then points o.Ref's tag and o.Tags at it. A signature that fails leaves
// no tag behind: devices tracking a tag or a range never see an unsigned
// release. The caller loads the signing key before calling, so that a
// missing password fails before anything is uploaded.
func Publish(ctx context.Context, c *oci.Client, o publish.Options, s *Signer) (*publish.Result, error) {
	res, err := publish.Push(ctx, c, o)
	if err != nil {
		return nil, err
	}
	pushed := o.Ref.WithDigest(res.Digest)
	if s != nil {
		if err := Sign(ctx, c, pushed, *s); err != nil {
			return nil, fmt.Errorf("%w (the artifact was pushed as %s but not tagged: sign it with `berth sign`, then tag it with `berth tag`)", err, pushed)
		}
	}
	for _, t := range res.Tags {
		if _, err := c.Tag(ctx, pushed, t); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// Sign signs ref, which carries a digest, with s.
func Sign(ctx context.Context, c *oci.Client, ref oci.Reference, s Signer) error {
	d, err := c.Name(ref)
	if err != nil {
		return err
	}
	if err := cosign.Sign(ctx, d, s.Key, s.Format, c.RemoteOptions(ctx)...); err != nil {
		return fmt.Errorf("sign %s: %w", ref, err)
	}
	return nil
}
