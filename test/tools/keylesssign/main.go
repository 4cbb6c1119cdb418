// Command keylesssign signs artifacts KEYLESS, cosign-v3 style, for
// berth's end-to-end tests: no Fulcio, Rekor or TSA is reachable here, so
// it starts a throw-away in-memory Sigstore (sigstore-go's VirtualSigstore),
// has it issue a certificate for -identity/-issuer, signs each -ref's digest
// in the sigstore bundle format (DSSE in-toto statement, Rekor entry, RFC
// 3161 timestamp), attaches the bundles as OCI referrers (or the referrers
// fallback tag) exactly like `berth sign`, and writes the trusted_root.json
// that verifies them.
//
//	go run ./test/tools/keylesssign \
//	  -ref 127.0.0.1:5000/acme/hello@sha256:... \
//	  -identity https://github.com/acme/fleet/.github/workflows/push.yml@refs/heads/main \
//	  -issuer https://token.actions.githubusercontent.com \
//	  -trusted-root-out trusted_root.json [-ca-file ca.pem] [-insecure]
//
// -ref may be repeated: every artifact signed in one run shares one trusted
// root (each run creates a new Sigstore, whose root does not verify other
// runs' signatures: that is how to make an "untrusted signer"). The
// certificate carries the identity as an e-mail SAN, verbatim, and no SCT;
// the written root therefore has no CT logs. Sign right after starting:
// the virtual CA and log are valid for about an hour from then (verifying
// later is fine). Registry credentials come from $DOCKER_CONFIG/config.json
// like docker's.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/keylesstest"
	"github.com/berth-dev/berth/policy/cosign"
)

// refList is a repeatable -ref flag.
type refList []string

func (r *refList) String() string     { return strings.Join(*r, ",") }
func (r *refList) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "keylesssign:", err)
		os.Exit(1)
	}
}

func run(args []string, log io.Writer) error {
	fs := flag.NewFlagSet("keylesssign", flag.ContinueOnError)
	fs.SetOutput(log)
	var refs refList
	fs.Var(&refs, "ref", "artifact to sign, HOST/REPO@sha256:... (required, repeatable)")
	identity := fs.String("identity", "", "signer identity (certificate SAN), e.g. a workflow URI (required)")
	issuer := fs.String("issuer", "", "OIDC issuer put in the certificate (required)")
	rootOut := fs.String("trusted-root-out", "", "where to write the trusted_root.json that verifies the signatures (required)")
	caFile := fs.String("ca-file", "", "CA to trust for the registry")
	insecure := fs.Bool("insecure", false, "plain HTTP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(refs) == 0 || *identity == "" || *issuer == "" || *rootOut == "" {
		fs.Usage()
		return errors.New("-ref, -identity, -issuer and -trusted-root-out are required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	var nopts []name.Option
	if *insecure {
		nopts = append(nopts, name.Insecure)
	}
	digests := make([]name.Digest, 0, len(refs))
	for _, r := range refs {
		d, err := name.NewDigest(r, nopts...)
		if err != nil {
			return fmt.Errorf("-ref %s: want HOST/REPO@sha256:<hex>: %w", r, err)
		}
		digests = append(digests, d)
	}
	tr, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return errors.New("unexpected default transport")
	}
	tr = tr.Clone()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no PEM certificates", *caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	ropts := []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithTransport(tr)}

	s, err := keylesstest.New()
	if err != nil {
		return err
	}
	ctx := context.Background()
	for _, d := range digests {
		b, err := s.SignBundle(d.DigestStr(), *identity, *issuer)
		if err != nil {
			return fmt.Errorf("signing %s: %w", d, err)
		}
		if err := cosign.AttachBundle(ctx, d, b, ropts...); err != nil {
			return err
		}
		fmt.Fprintf(log, "signed %s keyless as %s (issuer %s)\n", d, *identity, *issuer)
	}
	if err := s.WriteTrustedRoot(*rootOut); err != nil {
		return err
	}
	fmt.Fprintf(log, "wrote %s\n", *rootOut)
	return nil
}
