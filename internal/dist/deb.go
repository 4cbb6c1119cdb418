package dist

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

//go:embed files
var packaging embed.FS

// Paths the package installs.
const (
	DebBerth    = "/usr/bin/berth"
	DebAgent    = "/usr/bin/berth-agent"
	DebUnit     = "/lib/systemd/system/berth-agent.service"
	DebConfig   = "/etc/berth/agent.yaml"
	DebManDir   = "/usr/share/man/man1"
	DebBashComp = "/usr/share/bash-completion/completions/berth"
	DebZshComp  = "/usr/share/zsh/vendor-completions/_berth"
	DebFishComp = "/usr/share/fish/vendor_completions.d/berth.fish"
)

// Deb writes the Debian package of bins into outDir, with the completion
// scripts and man pages of docsDir, and returns its path.
func Deb(bins Binaries, version, docsDir, outDir string) (string, error) {
	work, err := os.MkdirTemp("", "berth-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	// nfpm reads everything from files: write the embedded ones out.
	for _, name := range []string{"berth-agent.service", "agent.yaml", "preinst", "postinst", "postrm"} {
		b, err := packaging.ReadFile("files/" + name)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(work, name), b, 0o644); err != nil {
			return "", err
		}
	}
	contents := files.Contents{
		{Source: bins.Berth, Destination: DebBerth, FileInfo: &files.ContentFileInfo{Mode: 0o755}},
		{Source: bins.Agent, Destination: DebAgent, FileInfo: &files.ContentFileInfo{Mode: 0o755}},
		{Source: filepath.Join(work, "berth-agent.service"), Destination: DebUnit, FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		{Source: filepath.Join(work, "agent.yaml"), Destination: DebConfig, Type: files.TypeConfigNoReplace, FileInfo: &files.ContentFileInfo{Mode: 0o640, Owner: "root", Group: "berth"}},
		{Destination: "/etc/berth", Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: 0o750, Owner: "root", Group: "berth"}},
	}
	comp := map[string]string{"berth.bash": DebBashComp, "_berth": DebZshComp, "berth.fish": DebFishComp}
	docs, err := DocEntries(docsDir)
	if err != nil {
		return "", err
	}
	for _, d := range docs {
		base := filepath.Base(d.Name)
		switch {
		case strings.HasPrefix(d.Name, "completion/") && comp[base] != "":
			contents = append(contents, &files.Content{Source: d.Source, Destination: comp[base], FileInfo: &files.ContentFileInfo{Mode: 0o644}})
		case strings.HasPrefix(d.Name, "man/"):
			contents = append(contents, &files.Content{Source: d.Source, Destination: DebManDir + "/" + base, FileInfo: &files.ContentFileInfo{Mode: 0o644}})
		}
	}
	info := &nfpm.Info{
		Name:        "berth",
		Arch:        bins.Platform.DebArch(),
		Platform:    "linux",
		Version:     debVersion(version),
		Section:     "admin",
		Priority:    "optional",
		Maintainer:  "berth developers <berth@berth.invalid>",
		Description: "GitOps for devices, delivered through OCI registries\nberth publishes the desired state of devices as signed OCI artifacts;\nits agent, berth-agent, keeps each device converged with Docker Compose\nor Helm.",
		Homepage:    "https://github.com/berth-dev/berth",
		License:     "Apache-2.0",
		MTime:       epoch,
		Overridables: nfpm.Overridables{
			Contents:   contents,
			Recommends: []string{"docker.io | docker-ce"},
			Scripts: nfpm.Scripts{
				PreInstall:  filepath.Join(work, "preinst"),
				PostInstall: filepath.Join(work, "postinst"),
				PostRemove:  filepath.Join(work, "postrm"),
			},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("deb: %w", err)
	}
	path := filepath.Join(outDir, fmt.Sprintf("berth_%s_%s.deb", info.Version, info.Arch))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		return "", fmt.Errorf("deb: %w", err)
	}
	return path, f.Close()
}

// debVersion makes a Debian version of a release version: without a
// leading "v", and, when it does not start with a digit (git describe
// --always gives a bare commit hash in a clone without tags), after
// "0.0.0~", which sorts below every real release.
func debVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0.0.0~" + v
	}
	return v
}
