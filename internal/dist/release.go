package dist

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Release is a whole `make dist`: binaries, archives, packages, checksums,
// the agent image, and the size of every binary.
type Release struct {
	Build
	Platforms []Platform
	// Out is the output folder.
	Out string
	// Docs writes the completion scripts and man pages into a folder
	// (cli.WriteDocs).
	Docs func(dir string) error
	// Variants builds the Compose-only and Helm-only agents too.
	Variants bool
	// Push, when set, is where the image index is pushed; PlainHTTP
	// pushes over HTTP.
	Push      string
	PlainHTTP bool
}

// Run builds everything into Out: berth_<version>_<os>_<arch>.tar.gz and
// .deb per platform, SHA256SUMS, the image as an OCI layout in image/, and
// sizes.txt.
func (r Release) Run(ctx context.Context) error {
	if err := os.MkdirAll(r.Out, 0o755); err != nil {
		return err
	}
	docs := filepath.Join(r.Out, "docs")
	if err := r.Docs(docs); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	docEntries, err := DocEntries(docs)
	if err != nil {
		return err
	}
	version := strings.TrimPrefix(r.Version, "v")
	var all []Binaries
	var sums []string
	var sizes strings.Builder
	fmt.Fprintf(&sizes, "%-14s %-22s %10s\n", "platform", "binary", "bytes")
	for _, p := range r.Platforms {
		dir := filepath.Join(r.Out, "build", p.Slug())
		bins, err := r.Binaries(ctx, p, dir, "")
		if err != nil {
			return err
		}
		all = append(all, bins)
		recordSize(&sizes, p, "berth", bins.Berth)
		recordSize(&sizes, p, "berth-agent", bins.Agent)
		if r.Variants {
			for _, v := range Variants[1:] {
				out := filepath.Join(dir, "berth-agent-"+v.Name)
				if err := r.goBuild(ctx, p, "./cmd/berth-agent", out, v.Tags); err != nil {
					return err
				}
				recordSize(&sizes, p, "berth-agent ("+v.Name+")", out)
			}
		}
		name := fmt.Sprintf("berth_%s_%s", version, p.Slug())
		entries := append([]Entry{
			{Name: "berth", Source: bins.Berth, Mode: 0o755},
			{Name: "berth-agent", Source: bins.Agent, Mode: 0o755},
			{Name: "README.md", Source: filepath.Join(r.Root, "README.md")},
			{Name: "examples/agent.yaml", Source: filepath.Join(r.Root, "examples", "agent.yaml")},
			{Name: "examples/systemd/berth-agent.service", Source: filepath.Join(r.Root, "examples", "systemd", "berth-agent.service")},
		}, docEntries...)
		if err := Archive(filepath.Join(r.Out, name+".tar.gz"), name, entries); err != nil {
			return err
		}
		deb, err := Deb(bins, r.Version, docs, r.Out)
		if err != nil {
			return err
		}
		sums = append(sums, name+".tar.gz", filepath.Base(deb))
		r.logf("dist: %s.tar.gz and %s", name, filepath.Base(deb))
	}
	if _, err := Checksums(r.Out, sums); err != nil {
		return err
	}
	idx, err := Image(all, r.Version)
	if err != nil {
		return err
	}
	if err := WriteLayout(filepath.Join(r.Out, "image"), idx); err != nil {
		return err
	}
	if r.Push != "" {
		if err := Push(ctx, r.Push, idx, r.PlainHTTP, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push image %s: %w", r.Push, err)
		}
		r.logf("dist: pushed the agent image to %s", r.Push)
	}
	r.logf("%s", sizes.String())
	return os.WriteFile(filepath.Join(r.Out, "sizes.txt"), []byte(sizes.String()), 0o644)
}

func recordSize(b *strings.Builder, p Platform, what, path string) {
	if st, err := os.Stat(path); err == nil {
		fmt.Fprintf(b, "%-14s %-22s %10d\n", p, what, st.Size())
	}
}
