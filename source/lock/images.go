package lock

import (
	"errors"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/readcap"
	"github.com/berth-dev/berth/state"
)

// The Compose part of Lock: find the image of every service of a Compose
// app, and write the digests into the Compose files.

// scanCompose records a site for every image the Compose files of u
// reference, and fails the services that name none.
func (l *locker) scanCompose(u unit) {
	files, err := u.app.Compose.ConfigFiles(l.fsys)
	if err != nil {
		l.fail(u, state.FileName, lineOf(u.node, "compose", "path"), "", "", "", err)
		return
	}
	type svc struct {
		image, extends  bool
		file, build     string // where the service first appears, first builds
		line, buildLine int
	}
	svcs := map[string]*svc{}
	var order []string
	for _, f := range files {
		pf := l.compose(f)
		if pf.err != nil {
			l.fail(u, f, yamlErrLine(pf.err), "", "", "", pf.err)
			continue
		}
		for _, is := range pf.issues {
			l.fail(u, f, is.line, is.service, "", "", is.err)
		}
		if pf.cf == nil {
			continue
		}
		for _, s := range pf.cf.services {
			a := svcs[s.name]
			if a == nil {
				a = &svc{file: f, line: s.line}
				svcs[s.name] = a
				order = append(order, s.name)
			}
			if s.extendsFile > 0 {
				l.fail(u, f, s.extendsFile, s.name, "", "", errors.New("extends.file is not supported: the image it brings could not be pinned; move the service into the app's Compose files"))
			}
			a.extends = a.extends || s.extends > 0
			if s.build > 0 && a.buildLine == 0 {
				a.build, a.buildLine = f, s.build
			}
			if s.image != nil {
				a.image = true
				l.imageSite(u, f, pf, s)
			}
		}
	}
	for _, name := range order {
		a := svcs[name]
		switch {
		case a.image || a.extends:
		case a.buildLine > 0:
			l.fail(u, a.build, a.buildLine, name, "", "", errors.New("build: without image: devices do not build images; build and push the image in CI and set image: to it"))
		default:
			l.fail(u, a.file, a.line, name, "", "", errors.New("no image: set image: to the reference of the image to run"))
		}
	}
}

// compose reads and parses a Compose file once.
func (l *locker) compose(p string) *parsedFile {
	if pf, ok := l.files[p]; ok {
		return pf
	}
	pf := &parsedFile{values: map[*yaml.Node]string{}}
	l.files[p] = pf
	data, err := readcap.File(l.fsys, p, maxComposeSize)
	if err != nil {
		pf.err = err
		return pf
	}
	pf.cf, pf.issues = parseCompose(data)
	return pf
}

// imageSite records the image of service s, in file f.
func (l *locker) imageSite(u unit, f string, pf *parsedFile, s *service) {
	v := s.image.Value
	ref, err := parseImage(v)
	if err != nil {
		l.fail(u, f, s.imageLine, s.name, KindImage, v, err)
		return
	}
	e := Entry{App: u.app.Name, Extension: u.ext, File: f, Service: s.name, Kind: KindImage, Ref: v, Repository: ref.repository}
	if ref.digest != "" {
		e.Digest = ref.digest
		l.entries = append(l.entries, e)
		return
	}
	l.sites = append(l.sites, &site{u: u, entry: e, resolve: ref.resolvable(), line: s.imageLine, file: pf, node: s.image, written: withTag(v, ref)})
}

// rewriteCompose returns the Compose file with its images pinned, edited
// in place if it can be, encoded again otherwise.
func rewriteCompose(pf *parsedFile) ([]byte, error) {
	if out, ok := replaceScalars(pf.cf.data, pf.values); ok && composeMatches(out, pf) {
		return out, nil
	}
	for n, v := range pf.values {
		n.Value = v
		n.Style &^= yaml.LiteralStyle | yaml.FoldedStyle
	}
	out, err := encodeYAML(pf.cf.doc)
	if err != nil {
		return nil, err
	}
	if !composeMatches(out, pf) {
		return nil, errors.New("cannot rewrite the images of this file: simplify its YAML")
	}
	return out, nil
}

// composeMatches checks that out, a rewritten Compose file, has the
// services of pf with the images pinned.
func composeMatches(out []byte, pf *parsedFile) bool {
	cf, issues := parseCompose(out)
	if cf == nil || len(issues) > 0 || len(cf.services) != len(pf.cf.services) {
		return false
	}
	for i, s := range pf.cf.services {
		t := cf.services[i]
		if s.name != t.name || (s.image == nil) != (t.image == nil) {
			return false
		}
		if s.image == nil {
			continue
		}
		want, ok := pf.values[s.image]
		if !ok {
			want = s.image.Value
		}
		if t.image.Value != want {
			return false
		}
	}
	return true
}
