package config

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/policy/window"
	"github.com/berth-dev/berth/source/oci"
	"github.com/berth-dev/berth/source/selector"
)

// FuzzParse checks that Parse never panics, that every error names the
// file, and that what it accepts holds the documented invariants.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	files = append(files, "testdata/full.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(margoYAML))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(name, data)
		if err != nil {
			if c != nil {
				t.Fatal("a config returned with an error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, name+":") {
					t.Fatalf("error does not name the file: %q", line)
				}
			}
			return
		}
		if (len(c.Sources) == 0 && c.Margo == nil) || c.KeepRevisions < 1 || c.StateDir == "" || c.Socket == "" || len(c.Socket) > maxSocketPath {
			t.Fatalf("invalid config: %+v", c)
		}
		if r := c.Report.Prometheus; r != nil {
			u, err := url.Parse(r.RemoteWrite)
			if err != nil || u.Host == "" || u.User != nil || (u.Scheme == "http") != r.Insecure || u.Scheme != "http" && u.Scheme != "https" ||
				r.Interval < MinInterval || r.Interval > MaxReportInterval || r.Queue.MaxAge < MinReportMaxAge ||
				r.Queue.MaxSize < MinReportMaxSize || r.Queue.MaxSize > MaxReportMaxSize ||
				r.BasicAuth != nil && (r.BearerTokenFile != "" || r.BasicAuth.Username == "" || r.BasicAuth.PasswordFile == "") {
				t.Fatalf("invalid report: %+v", r)
			}
		}
		names := map[string]bool{}
		for _, s := range c.Sources {
			if names[s.Name] || !labelRE.MatchString(s.Name) || len(s.Name) > 63 {
				t.Fatalf("bad or duplicate name %q", s.Name)
			}
			names[s.Name] = true
			if s.File != "" {
				// A bundle: an absolute, clean path, nothing to select and
				// no registry.
				if !strings.HasPrefix(s.URL, FileScheme) || !filepath.IsAbs(s.File) || filepath.Clean(s.File) != s.File ||
					s.Registry != "" || s.Repository != "" || s.Ref != (Ref{}) || s.Filter != nil {
					t.Fatalf("bundle source %s: %+v", s.Name, s)
				}
				continue
			}
			ref, err := oci.ParseReference(s.URL)
			if err != nil || ref.Tag != "" || ref.Digest != "" || ref.Registry != s.Registry || ref.Repository != s.Repository {
				t.Fatalf("url %q: %+v, %v; config says %s %s", s.URL, ref, err, s.Registry, s.Repository)
			}
			modes := 0
			for _, v := range []string{s.Ref.Tag, s.Ref.Digest, s.Ref.Semver} {
				if v != "" {
					modes++
				}
			}
			if s.Filter == nil && modes != 1 || s.Filter != nil && (s.Ref.Tag != "" || s.Ref.Digest != "") {
				t.Fatalf("source %s: ref %+v filter %+v", s.Name, s.Ref, s.Filter)
			}
			if s.Ref.Semver != "" || s.Filter != nil {
				if _, err := selector.New(s.SelectorPolicy()); err != nil {
					t.Fatalf("source %s: policy %+v: %v", s.Name, s.SelectorPolicy(), err)
				}
			}
			if s.Interval < MinInterval || s.Timeout < MinTimeout || s.Jitter < 0 || s.Jitter > MaxJitter || s.Limits.MaxSize < 1 || s.Limits.MaxFiles < 1 {
				t.Fatalf("source %s: %+v", s.Name, s)
			}
			if (s.Verify == nil) != s.InsecureSkipVerify {
				t.Fatalf("source %s: verify %+v, insecureSkipVerify %v", s.Name, s.Verify, s.InsecureSkipVerify)
			}
			if v := s.Verify; v != nil {
				if len(v.Keys) == 0 && v.Keyless == nil {
					t.Fatalf("source %s: empty verify", s.Name)
				}
				if kl := v.Keyless; kl != nil && (kl.TrustedRoot == "" || len(kl.Identities) == 0) {
					t.Fatalf("source %s: keyless %+v", s.Name, kl)
				}
			}
		}
		for _, r := range c.Registries {
			if r.Source == "" || len(r.Mirrors) == 0 {
				t.Fatalf("registry %+v", r)
			}
		}
		checkFleet(t, c)
	})
}

// checkFleet fails unless the device and windows of c hold what Parse
// guarantees.
func checkFleet(t *testing.T, c *Config) {
	t.Helper()
	if c.Device.ID != "" && (labels.CheckValue(c.Device.ID) != nil || c.Device.IDFile != "") {
		t.Fatalf("device %+v", c.Device)
	}
	for k, v := range c.Device.Labels {
		if labels.CheckKey(k) != nil || labels.CheckValue(v) != nil {
			t.Fatalf("label %q=%q", k, v)
		}
	}
	for _, w := range append([]Windows{c.Windows}, func() (ws []Windows) {
		for _, s := range c.Sources {
			ws = append(ws, s.Windows)
		}
		return ws
	}()...) {
		for _, s := range []window.Schedule{w.Apply, w.Download} {
			if s != nil && len(s) == 0 {
				t.Fatal("an empty schedule")
			}
			for _, win := range s {
				if win.Location == nil || win.Start == win.End || win.Days == [7]bool{} || s.Next(time.Unix(0, 0)).IsZero() {
					t.Fatalf("window %+v", win)
				}
			}
		}
	}
}

// FuzzSourceFields puts fuzzed values in the fields of a valid source, so
// that the checks of URLs, refs and filters are reached at every run: what
// Parse accepts must be usable by the registry client and the selector.
func FuzzSourceFields(f *testing.F) {
	f.Add("oci://registry.example.com/fleet/a", "stable", "", "", "")
	f.Add("oci://[::1]:5000/a", "", ">=1.0.0-0", "", "")
	f.Add("oci://localhost:5000/a/b_c/d--e", "", "", `^main-(?P<ts>\d+)$`, "$ts")
	f.Add("oci://r.example/A", "-x", "1.x.y", "(", "${ts")
	f.Add("file:///media/usb/site.tar", "", "", "", "")
	f.Fuzz(func(t *testing.T, url, tag, semver, pattern, extract string) {
		var b strings.Builder
		b.WriteString("sources:\n  - name: a\n    url: " + strconv.Quote(url) + "\n")
		if tag != "" || semver != "" || pattern == "" {
			b.WriteString("    ref: {")
			if tag != "" {
				b.WriteString("tag: " + strconv.Quote(tag))
			} else if semver != "" {
				b.WriteString("semver: " + strconv.Quote(semver))
			}
			b.WriteString("}\n")
		}
		if pattern != "" {
			b.WriteString("    filter: {pattern: " + strconv.Quote(pattern) + ", extract: " + strconv.Quote(extract) + ", order: alphabetical}\n")
		}
		b.WriteString("    insecureSkipVerify: true\n")
		c, err := Parse(name, []byte(b.String()))
		if err != nil {
			return
		}
		s := c.Sources[0]
		if s.File != "" {
			if !filepath.IsAbs(s.File) || s.Ref != (Ref{}) || s.Filter != nil {
				t.Fatalf("bundle source: %+v", s)
			}
			return
		}
		ref, err := oci.ParseReference(s.URL)
		if err != nil || ref.Tag != "" || ref.Digest != "" || ref.Registry != s.Registry || ref.Repository != s.Repository {
			t.Fatalf("url %q: %+v, %v; config says %s %s", s.URL, ref, err, s.Registry, s.Repository)
		}
		if s.Ref.Tag != "" {
			if _, err := oci.ParseReference(s.URL + ":" + s.Ref.Tag); err != nil {
				t.Fatalf("tag %q: %v", s.Ref.Tag, err)
			}
		}
		if s.Ref.Semver != "" || s.Filter != nil {
			if _, err := selector.New(s.SelectorPolicy()); err != nil {
				t.Fatalf("policy %+v: %v", s.SelectorPolicy(), err)
			}
		}
	})
}
