// Command pushimage builds a single-layer image FROM scratch around one
// static binary and pushes it, for berth's demo and end-to-end tests: no
// image can be pulled from a public registry here.
//
//	go run ./test/tools/pushimage -binary ./hello -ref 127.0.0.1:5000/acme/hello:v1 -ca-file ca.pem
package main

import (
	"archive/tar"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pushimage:", err)
		os.Exit(1)
	}
}

func run() error {
	binary := flag.String("binary", "", "static binary to put in the image (required)")
	ref := flag.String("ref", "", "where to push, HOST/REPO:TAG (required)")
	caFile := flag.String("ca-file", "", "CA to trust for the registry")
	insecure := flag.Bool("insecure", false, "plain HTTP")
	label := flag.String("label", "", "extra image label KEY=VALUE, to make distinct images from one binary")
	flag.Parse()
	if *binary == "" || *ref == "" {
		flag.Usage()
		return fmt.Errorf("-binary and -ref are required")
	}
	img, err := build(*binary, *label)
	if err != nil {
		return err
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
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// Credentials come from $DOCKER_CONFIG/config.json like docker's.
	if err := remote.Write(r, img, remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithTransport(tr)); err != nil {
		return fmt.Errorf("push %s: %w", r, err)
	}
	d, _ := img.Digest()
	fmt.Printf("%s@%s\n", r, d)
	return nil
}

func build(binary, label string) (v1.Image, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	entry := "/" + path.Base(binary)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: entry[1:], Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Entrypoint = []string{entry}
	cfg.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
	if label != "" {
		k, v, _ := strings.Cut(label, "=")
		cfg.Config.Labels = map[string]string{k: v}
	}
	return mutate.ConfigFile(img, cfg)
}
