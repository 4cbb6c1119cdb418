// Command dist builds berth's release (see package dist): `make dist` runs
// it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/berth-dev/berth/internal/cli"
	"github.com/berth-dev/berth/internal/dist"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var o dist.Release
	var platforms string
	flag.StringVar(&o.Out, "out", "dist", "output folder")
	flag.StringVar(&o.Build.Version, "version", "dev", "version written into the binaries and packages")
	flag.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64,linux/arm/v7", "platforms, comma-separated")
	flag.BoolVar(&o.Variants, "variants", false, "also build the Compose-only and Helm-only agents and report every size")
	flag.StringVar(&o.Push, "push", "", "push the agent image's index to this reference (HOST/REPO:TAG)")
	flag.BoolVar(&o.PlainHTTP, "plain-http", false, "push over plain HTTP")
	flag.Parse()
	o.Build.Root, o.Build.Log, o.Docs = ".", os.Stderr, cli.WriteDocs
	cli.Version = o.Build.Version
	for _, s := range strings.Split(platforms, ",") {
		p, err := dist.ParsePlatform(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintln(os.Stderr, "dist:", err)
			os.Exit(2)
		}
		o.Platforms = append(o.Platforms, p)
	}
	if err := o.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dist:", err)
		os.Exit(1)
	}
}
