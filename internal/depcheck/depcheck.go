// Package depcheck keeps berth's import direction executable, the way
// go-containerregistry's cmd/crane/depcheck_test.go does: its test lists
// the packages of the module with their transitive dependencies (go list
// -deps, test files left out) and fails on any import against the
// intended direction
//
//	cmd → internal/cli → reconcile → {apply, source, policy} → state
//
// where apply, source and policy never import reconcile or each other's
// backends, and state, the contracts at the bottom, imports none of them.
package depcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Package is a package of the module and what it depends on.
type Package struct {
	// ImportPath is the package's path relative to the module
	// ("apply/compose").
	ImportPath string
	// Deps are the module's packages it depends on, directly or not,
	// relative to the module; Imports those it imports directly.
	Deps, Imports []string
}

// Rule forbids packages matching From to depend on packages matching To
// (patterns are module-relative paths; "x/..." matches x and below it,
// "..." everything).
type Rule struct {
	From, To string
	// Except are To patterns the rule allows after all.
	Except []string
	// Why is said when the rule is broken.
	Why string
}

// List runs go list in dir for the module's packages and their
// dependencies within the module.
func List(ctx context.Context, dir string) ([]Package, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-json=ImportPath,Deps,Imports,Module", "./...")
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, errOut.String())
	}
	var pkgs []Package
	dec := json.NewDecoder(&out)
	for {
		var p struct {
			ImportPath    string
			Deps, Imports []string
			Module        *struct{ Path string }
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		if p.Module == nil {
			continue
		}
		mod := p.Module.Path + "/"
		rel := func(in []string) []string {
			var o []string
			for _, d := range in {
				if r, ok := strings.CutPrefix(d, mod); ok {
					o = append(o, r)
				}
			}
			return o
		}
		pkgs = append(pkgs, Package{ImportPath: strings.TrimPrefix(p.ImportPath, mod), Deps: rel(p.Deps), Imports: rel(p.Imports)})
	}
	return pkgs, nil
}

// Match reports whether the module-relative path matches pattern: the
// path itself, or with "/..." any path below it too.
func Match(pattern, path string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

// Violation is a dependency a rule forbids.
type Violation struct {
	Rule     Rule
	From, To string
	// Direct is set when From imports To itself.
	Direct bool
}

func (v Violation) String() string {
	how := "depends on"
	if v.Direct {
		how = "imports"
	}
	return fmt.Sprintf("%s %s %s: %s", v.From, how, v.To, v.Rule.Why)
}

// Check returns the dependencies of pkgs that rules forbid.
func Check(pkgs []Package, rules []Rule) []Violation {
	var out []Violation
	for _, p := range pkgs {
		for _, r := range rules {
			if !Match(r.From, p.ImportPath) {
				continue
			}
			for _, d := range p.Deps {
				if !Match(r.To, d) || excepted(r, d) {
					continue
				}
				direct := false
				for _, i := range p.Imports {
					direct = direct || i == d
				}
				out = append(out, Violation{Rule: r, From: p.ImportPath, To: d, Direct: direct})
			}
		}
	}
	return out
}

func excepted(r Rule, path string) bool {
	for _, e := range r.Except {
		if Match(e, path) {
			return true
		}
	}
	return false
}
