// Package dist builds berth's releases: the binaries for each platform
// (static, without cgo), release archives with their SHA256SUMS, a Debian
// package (with nfpm: the binaries, the systemd unit, /etc/berth/agent.yaml
// as a conffile, a berth system user, shell completion and man pages) and
// the agent's container image, FROM scratch and multi-platform, as an OCI
// index built with go-containerregistry (no Docker needed). `make dist`
// runs it through internal/dist/cmd/dist.
package dist

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Platform is a target of a build: linux/amd64, linux/arm64, linux/arm/v7.
type Platform struct {
	OS, Arch, Variant string
}

// DefaultPlatforms are what make dist builds: what edge devices run.
var DefaultPlatforms = []Platform{{"linux", "amd64", ""}, {"linux", "arm64", ""}, {"linux", "arm", "v7"}}

// ParsePlatform parses os/arch[/variant]; arm needs v6 or v7.
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Platform{}, fmt.Errorf("%w %q: use os/arch[/variant], such as linux/arm/v7", ErrPlatform, s)
	}
	p := Platform{OS: parts[0], Arch: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	if p.Arch == "arm" && p.Variant != "v6" && p.Variant != "v7" {
		return Platform{}, fmt.Errorf("%w %q: arm needs a variant, v6 or v7", ErrPlatform, s)
	}
	return p, nil
}

// String is os/arch[/variant].
func (p Platform) String() string {
	s := p.OS + "/" + p.Arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Slug is os_arch[variant], for file names: linux_armv7.
func (p Platform) Slug() string { return p.OS + "_" + p.Arch + p.Variant }

// DebArch is the Debian architecture: amd64, arm64, armhf (arm/v7),
// armel (arm/v6).
func (p Platform) DebArch() string {
	switch {
	case p.Arch == "arm" && p.Variant == "v7":
		return "armhf"
	case p.Arch == "arm":
		return "armel"
	}
	return p.Arch
}

// env is the go command's environment for a static build for p.
func (p Platform) env() []string {
	env := []string{"CGO_ENABLED=0", "GOOS=" + p.OS, "GOARCH=" + p.Arch}
	if p.Arch == "arm" {
		env = append(env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	return env
}

// Build says how to build.
type Build struct {
	// Root is the module root.
	Root string
	// Version is written into the binaries (cli.Version).
	Version string
	// Go is the go command; default "go".
	Go string
	// Log receives the go command's output and progress; nil discards.
	Log io.Writer
}

// Binaries are the two programs of a platform.
type Binaries struct {
	Platform     Platform
	Berth, Agent string
}

// Variant is an agent build: its name and build tags.
type Variant struct {
	Name, Tags string
}

// Variants are the agent builds offered: both appliers, Compose only,
// Helm only.
var Variants = []Variant{{"full", ""}, {"compose", "berth_nohelm"}, {"helm", "berth_nocompose"}}

const versionVar = "github.com/berth-dev/berth/internal/cli.Version"

// Binaries builds berth and berth-agent (with the build tags agentTags)
// for p into dir.
func (b Build) Binaries(ctx context.Context, p Platform, dir, agentTags string) (Binaries, error) {
	out := Binaries{Platform: p, Berth: filepath.Join(dir, "berth"), Agent: filepath.Join(dir, "berth-agent")}
	if err := b.goBuild(ctx, p, "./cmd/berth", out.Berth, ""); err != nil {
		return Binaries{}, err
	}
	if err := b.goBuild(ctx, p, "./cmd/berth-agent", out.Agent, agentTags); err != nil {
		return Binaries{}, err
	}
	return out, nil
}

// BuildOne builds the command pkg (./cmd/berth or ./cmd/berth-agent) for
// p into out, with the build tags tags.
func (b Build) BuildOne(ctx context.Context, p Platform, pkg, out, tags string) error {
	return b.goBuild(ctx, p, pkg, out, tags)
}

// goBuild builds pkg for p, stripped and reproducible (-trimpath, no
// build id).
func (b Build) goBuild(ctx context.Context, p Platform, pkg, out, tags string) error {
	gobin := b.Go
	if gobin == "" {
		gobin = "go"
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid= -X " + versionVar + "=" + b.Version}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "-o", out, pkg)
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = b.Root
	cmd.Env = append(append(os.Environ(), "GOFLAGS="), p.env()...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	start := time.Now()
	b.logf("dist: building %s for %s%s", pkg, p, tagNote(tags))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", pkg, p, err, output.String())
	}
	if st, err := os.Stat(out); err == nil {
		b.logf("dist: %s for %s%s: %.1f MB in %s", filepath.Base(out), p, tagNote(tags), float64(st.Size())/1e6, time.Since(start).Round(time.Second))
	}
	return nil
}

func tagNote(tags string) string {
	if tags == "" {
		return ""
	}
	return " (-tags " + tags + ")"
}

func (b Build) logf(format string, args ...any) {
	if b.Log != nil {
		fmt.Fprintf(b.Log, format+"\n", args...)
	}
}
