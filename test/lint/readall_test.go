package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// readAllAllowed lists the io.ReadAll calls of non-test code, by file and
// enclosing function, each with why reading whole is bounded there. Every
// one of them must also read through io.LimitReader, which the test
// checks, unless its reason starts with boundedOtherwise and says what
// bounds it. Untrusted input is streamed through size-capped, verifying
// readers; a new io.ReadAll needs a line here and a reason.
var readAllAllowed = map[string]string{
	"internal/cli/rollout.go:readLimited":              "a file named on the command line, capped at max+1",
	"policy/inhibit/inhibit.go:read":                   "an inhibitor file on the device, capped at MaxFileSize+1",
	"policy/rollout/statement/registry.go:fetchBundle": "a statement bundle from the registry, capped at max+1",
	"reconcile/config/device.go:machineID":             "/etc/machine-id, capped at 128 bytes",
	"source/margo/cache.go:get":                        "a cached deployment, capped at spec.MaxDeploymentSize+1 and re-verified",
	"source/margo/cache.go:getManifest":                "a cached manifest, capped at spec.MaxManifestSize+1",
	"source/margo/client.go:apiError":                  "an error answer of the WFM, capped at spec.MaxProblemSize+1",
	"source/margo/trustbundle.go:readBundleCache":      "the cached trust bundle, capped at 2*MaxTrustBundleSize+1 and parsed strictly",
	"source/margo/trustbundle_fetch.go:fetch":          "a trust bundle from the MIS, capped at MaxTrustBundleSize+1",
	"source/margo/trustbundle_fetch.go:readCapped":     "a CA file named in agent.yaml, capped at maxIdentityFile",
	"source/margo/margotest/handlers.go:serve":         "test support: a request to the test WFM, capped at 4 MiB",
	"internal/promclient/promclient.go:readSmall":      "a token or password file agent.yaml names, capped at maxSecretFile+1",
	"reconcile/report/queue.go:read":                   "a queued remote-write record on the device, capped at maxRecordFile+1",
	"source/margo/materialize/helm.go:checkChart":      "the Chart.yaml of a chart extracted into the revision (size-capped, digest-verified), capped at maxChartFile+1",
	"source/margo/materialize/materialize.go:LoadPlan": "a plan file of a revision, capped at maxPlanFile+1",
	"source/margo/outbox/outbox.go:readMessage":        "a queued status message on the device, capped at maxMessage+1",
	"source/margo/state.go:LoadState":                  "the Margo state file, capped at maxStateFile+1",
	"source/margo/sync.go:fetchManifest":               "the WFM's manifest answer, capped at spec.MaxManifestSize+1",
	"source/margo/sync.go:fetchYAML":                   boundedOtherwise + "a temporary file fetchYAML wrote through a reader capped at spec.MaxDeploymentSize and verified",
	"internal/readcap/readcap.go:File":                 "a chart, values or state-folder file, capped at max+1",
	"internal/testenv/docker.go:call":                  "test support: answers of the local test Docker Engine, capped at 64 MiB",
	"internal/testenv/docker.go:send":                  "test support: an error answer of the local test Docker Engine, capped at 64 KiB",
	"internal/testenv/kube.go:start":                   "test support: answers of the local test kube-apiserver, capped at 64 KiB",
	"internal/testenv/proxy.go:serveTagsPage":          "test support: the tag list of the local test registry, capped at 64 MiB",
	"policy/cosign/verify.go:fetchBundle":              "a sigstore bundle layer, capped at maxSignatureSize+1 and digest-checked",
	"reconcile/api/client.go:do":                       "an answer of the local agent over its unix socket, capped at maxAnswer",
	"reconcile/config/check.go:readFile":               "a file agent.yaml names (key, CA), capped at maxCheckedFile+1",
	"reconcile/config/config.go:Load":                  "agent.yaml, capped at MaxFileSize+1",
	"source/bundle/create.go:readLock":                 "the lock file of a state folder, capped at maxLockSize+1",
	"state/devicestate.go:Load":                        "berth.yaml of a revision, capped at MaxFileSize+1",
}

// boundedOtherwise starts the reason of an allowed io.ReadAll whose reader
// is bounded by construction rather than by an io.LimitReader around it.
const boundedOtherwise = "bounded without io.LimitReader: "

// TestNoUnboundedReadAll fails when io.ReadAll (or ioutil.ReadAll)
// appears in non-test code outside readAllAllowed, or without an
// io.LimitReader around what it reads, and when an entry of the list no
// longer matches a call.
func TestNoUnboundedReadAll(t *testing.T) {
	root := testenv.ModuleRoot(t)
	seen := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, call := range readAllCalls(f) {
			key := rel + ":" + call.fn
			pos := fset.Position(call.expr.Pos())
			where := rel + ":" + strconv.Itoa(pos.Line) + " (" + call.fn + ")"
			if _, ok := readAllAllowed[key]; !ok {
				t.Errorf("%s: %s reads a whole stream: stream it through a size-capped reader instead, or add %q to readAllAllowed with why it is bounded", where, call.name, key)
				continue
			}
			seen[key] = true
			if !limited(call.expr, call.ioName) && !strings.HasPrefix(readAllAllowed[key], boundedOtherwise) {
				t.Errorf("%s: %s without io.LimitReader around its reader", where, call.name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var stale []string
	for k := range readAllAllowed {
		if !seen[k] {
			stale = append(stale, k)
		}
	}
	slices.Sort(stale)
	for _, k := range stale {
		t.Errorf("readAllAllowed lists %s, which has no io.ReadAll any more: remove it", k)
	}
}

type readAllCall struct {
	expr   *ast.CallExpr
	name   string // io.ReadAll as written
	fn     string // enclosing function, Recv.Method for methods
	ioName string // the name the file imports package io under
}

// readAllCalls finds the calls of io.ReadAll and ioutil.ReadAll of f.
func readAllCalls(f *ast.File) []readAllCall {
	names := map[string]string{} // local name -> import path
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		n := p[strings.LastIndex(p, "/")+1:]
		if imp.Name != nil {
			n = imp.Name.Name
		}
		names[n] = p
	}
	ioName := ""
	for n, p := range names {
		if p == "io" {
			ioName = n
		}
	}
	var out []readAllCall
	for _, decl := range f.Decls {
		fd, ok := decl.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		fn := fd.Name.Name
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "ReadAll" {
				return true
			}
			pkg, ok := sel.X.(*ast.Ident)
			if !ok || (names[pkg.Name] != "io" && names[pkg.Name] != "io/ioutil") {
				return true
			}
			out = append(out, readAllCall{expr: call, name: pkg.Name + ".ReadAll", fn: fn, ioName: ioName})
			return true
		})
	}
	return out
}

// limited reports whether the argument of the ReadAll call is a call of
// io.LimitReader.
func limited(call *ast.CallExpr, ioName string) bool {
	if len(call.Args) != 1 || ioName == "" {
		return false
	}
	inner, ok := call.Args[0].(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := inner.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "LimitReader" {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == ioName
}

// TestReadAllCheck: the check finds io.ReadAll under any import name and
// in closures, and tells a LimitReader argument from others.
func TestReadAllCheck(t *testing.T) {
	src := `package x

import (
	stdio "io"
	"io/ioutil"
	other "example.com/io"
)

func A(r stdio.Reader) { stdio.ReadAll(r) }
func B(r stdio.Reader) { stdio.ReadAll(stdio.LimitReader(r, 10)) }
func C(r stdio.Reader) { go func() { ioutil.ReadAll(r) }() }
func D(r stdio.Reader) { other.ReadAll(r) }
`
	f, err := parser.ParseFile(token.NewFileSet(), "x.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range readAllCalls(f) {
		got = append(got, c.fn+":"+c.name+":"+strconv.FormatBool(limited(c.expr, c.ioName)))
	}
	want := []string{"A:stdio.ReadAll:false", "B:stdio.ReadAll:true", "C:ioutil.ReadAll:false"}
	if !slices.Equal(got, want) {
		t.Errorf("found %v, want %v", got, want)
	}
}
