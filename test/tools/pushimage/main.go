// Command pushimage builds a single-layer image FROM scratch around one
// static binary and pushes it, for berth's demo: no image can be pulled from
// a public registry here. It is a thin CLI over testenv.PushScratchImage,
// which the end-to-end tests call as testenv.PushImage.
//
//	CGO_ENABLED=0 go build -o hello ./test/images/hello
//	go run ./test/tools/pushimage -binary ./hello -ref 127.0.0.1:5000/acme/hello:v1 -ca-file ca.pem
//
// It prints REF@DIGEST. Credentials come from $DOCKER_CONFIG/config.json
// (or ~/.docker/config.json) like docker's.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
)

// list is a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pushimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("pushimage", flag.ContinueOnError)
	binary := fs.String("binary", "", "static binary to put in the image at /NAME, the entrypoint (required)")
	ref := fs.String("ref", "", "where to push, HOST/REPO:TAG (required)")
	caFile := fs.String("ca-file", "", "CA to trust for the registry")
	insecure := fs.Bool("insecure", false, "plain HTTP")
	var labels, env, platforms list
	fs.Var(&labels, "label", "image label KEY=VALUE, to make distinct images from one binary (repeatable)")
	fs.Var(&env, "env", "image environment variable KEY=VALUE (repeatable)")
	fs.Var(&platforms, "platform", "push an index with an image for this OS/ARCH holding the same binary (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *binary == "" || *ref == "" {
		fs.Usage()
		return fmt.Errorf("-binary and -ref are required")
	}
	opts := testenv.ImageOptions{Env: env, Platforms: platforms}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if opts.Labels == nil {
			opts.Labels = map[string]string{}
		}
		opts.Labels[k] = v
	}
	var nopts []name.Option
	if *insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(*ref, nopts...)
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no PEM certificate", *caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	d, err := testenv.PushScratchImage(r, *binary, opts, remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithTransport(tr))
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", r, d)
	return nil
}
