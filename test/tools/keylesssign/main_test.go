package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/policy/cosign"
)

// TestSignAndVerify runs the tool against an in-process registry and
// verifies the result the way a device does: LoadTrustedRoot + VerifyPolicy.
func TestSignAndVerify(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // anonymous
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	var digests []name.Digest
	for _, repo := range []string{"acme/a", "acme/b"} {
		img, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		tag, err := name.NewTag(host + "/" + repo + ":v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(tag, img); err != nil {
			t.Fatal(err)
		}
		h, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, tag.Context().Digest(h.String()))
	}
	const (
		identity = "https://github.com/acme/fleet/.github/workflows/push.yml@refs/heads/main"
		issuer   = "https://token.actions.githubusercontent.com"
	)
	rootPath := filepath.Join(t.TempDir(), "trusted_root.json")
	var out bytes.Buffer
	err := run([]string{
		"-ref", digests[0].String(), "-ref", digests[1].String(),
		"-identity", identity, "-issuer", issuer, "-trusted-root-out", rootPath,
	}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, &out)
	}
	t.Log(out.String())

	tm, err := cosign.LoadTrustedRoot(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	p := cosign.Policy{TrustedRoot: tm, Identities: []cosign.Identity{{
		Issuer:  `^https://token\.actions\.githubusercontent\.com$`,
		Subject: `^https://github\.com/acme/fleet/\.github/workflows/push\.yml@refs/heads/main$`,
	}}}
	for _, d := range digests {
		res, err := cosign.VerifyPolicy(context.Background(), d, p)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if res.Identity != identity || res.Issuer != issuer || res.Format != cosign.FormatBundle {
			t.Errorf("%s: %+v", d, res)
		}
	}

	// A second run is another Sigstore: its root does not trust the first.
	other := filepath.Join(t.TempDir(), "other.json")
	if err := run([]string{"-ref", digests[0].String(), "-identity", "x@example.com", "-issuer", "https://issuer.example",
		"-trusted-root-out", other}, io.Discard); err != nil {
		t.Fatal(err)
	}
	otm, err := cosign.LoadTrustedRoot(other)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cosign.VerifyPolicy(context.Background(), digests[1], cosign.Policy{TrustedRoot: otm, Identities: p.Identities})
	if !errors.Is(err, cosign.ErrKeyMismatch) {
		t.Errorf("other root: %v, want ErrKeyMismatch", err)
	}
	// digests[0] now has both; the first root still verifies it.
	if _, err := cosign.VerifyPolicy(context.Background(), digests[0], p); err != nil {
		t.Errorf("after second signature: %v", err)
	}

	for _, args := range [][]string{
		{},
		{"-ref", host + "/acme/a:v1", "-identity", "i", "-issuer", "j", "-trusted-root-out", other},
	} {
		if err := run(args, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
