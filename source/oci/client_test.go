package oci

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestRepository checks that Repository gives the repository the client
// works with: its credentials, its TLS trust (CAFile and CAFiles, and
// nothing else), plain HTTP only when Insecure, the tag left out.
func TestRepository(t *testing.T) {
	ctx := context.Background()
	withAuth := testenv.StartRegistry(t, testenv.RegistryOptions{})
	other := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	c, err := NewClient(Options{DockerConfig: withAuth.DockerConfig, CAFile: withAuth.CAFile, CAFiles: []string{other.CAFile}})
	if err != nil {
		t.Fatal(err)
	}
	art := Artifact{Layer: blob([]byte("the layer"))}
	for _, reg := range []*testenv.Registry{withAuth, other} {
		ref, err := ParseReference("oci://" + reg.Host() + "/fleet/line-3:v1")
		if err != nil {
			t.Fatal(err)
		}
		desc, err := c.Push(ctx, ref, art)
		if err != nil {
			t.Fatalf("push to %s: %v", reg.Host(), err)
		}
		repo, err := c.Repository(ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := repo.Reference.String(); got != reg.Host()+"/fleet/line-3" || repo.PlainHTTP || repo.Client != c.auth {
			t.Errorf("%s: repository %s, plain HTTP %v, own client %v", reg.Host(), got, repo.PlainHTTP, repo.Client != c.auth)
		}
		got, err := repo.Resolve(ctx, "v1")
		if err != nil || got.Digest != desc.Digest {
			t.Errorf("%s: Resolve(v1) through Repository = %v, %v; want %v", reg.Host(), got.Digest, err, desc.Digest)
		}
	}

	// Without other's CA in CAFiles, other is not trusted.
	only, err := NewClient(Options{DockerConfig: withAuth.DockerConfig, CAFile: withAuth.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := ParseReference("oci://" + other.Host() + "/fleet/line-3")
	repo, err := only.Repository(ref)
	if err != nil {
		t.Fatal(err)
	}
	var uae x509.UnknownAuthorityError
	if _, err := repo.Resolve(ctx, "v1"); !errors.As(err, &uae) {
		t.Errorf("Resolve at a registry whose CA is not trusted = %v, want an unknown authority error", err)
	}

	// Insecure: plain HTTP.
	host, _ := newRegistry(t)
	ref, _ = ParseReference("oci://" + host + "/fleet/line-3")
	if repo, err := newClient(t).Repository(ref); err != nil || !repo.PlainHTTP {
		t.Errorf("Repository of an insecure client = %+v, %v; want plain HTTP", repo, err)
	}
}

// TestCAFileErrors checks that every CA file is read when the client is
// made.
func TestCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.json")
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"missing CAFiles entry", Options{CAFiles: []string{filepath.Join(dir, "missing.pem")}}, "read CA file"},
		{"CAFiles entry without PEM", Options{CAFiles: []string{"", notPEM}}, "CA file " + notPEM + " holds no PEM certificate"},
		{"CAFile without PEM", Options{CAFile: notPEM}, "CA file " + notPEM + " holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.DockerConfig = config
			if _, err := NewClient(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewClient = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
