package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/compose/v5/pkg/api"

	"github.com/berth-dev/berth/state"
)

// fastDir is a temporary folder on a tmpfs when there is one: fuzzers
// write files on every input.
func fastDir(f *testing.F) string {
	dir, err := os.MkdirTemp("/dev/shm", "berth-compose-fuzz-")
	if err != nil {
		return f.TempDir()
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// FuzzLoadProject loads an arbitrary compose.yaml with an arbitrary device
// env file, as Apply does for an app of a revision. It must never panic;
// a project it accepts has an image for every service, never builds or
// pulls, carries berth's labels, and its configuration hashes (which
// decide whether a service is recreated) are the same on every load.
func FuzzLoadProject(f *testing.F) {
	for _, s := range []struct{ compose, env string }{
		{webCompose("registry.plant.local/acme/web@sha256:"+strings.Repeat("a", 64), "${PORT:-8080}", "MODE=${MODE}"), "PORT=18080\nMODE=prod\n"},
		{"services:\n  web:\n    image: x:1\n    volumes: [\"./conf:/conf\"]\n    environment: [\"A=${A:-none}\"]\n", ""},
		{"name: other\nservices:\n  a:\n    image: a\n    depends_on: [b]\n    deploy: {replicas: 2}\n    profiles: [debug]\n  b:\n    image: b\n    build: .\nnetworks:\n  n: {}\nvolumes:\n  v: {external: true}\n", ""},
		{"services:\n  a:\n    build: .\n", ""},
		{"services:\n  a:\n    image: ${IMAGE:?set IMAGE}\n    labels: {berth.dev/config-hash: forged}\n", "IMAGE=x@sha256:" + strings.Repeat("b", 64)},
		{"x-common: &c\n  image: a\nservices:\n  a: *c\n  b:\n    <<: *c\n    command: [\"sh\", \"-c\", \"echo $$HOME\"]\n", "export A=1\n# comment\nB='single'\nC=\"double ${A}\"\n"},
	} {
		f.Add([]byte(s.compose), []byte(s.env))
	}
	dir := fastDir(f)
	envDir := filepath.Join(dir, "env")
	if err := os.Mkdir(envDir, 0o755); err != nil {
		f.Fatal(err)
	}
	rev := revisionIn(f, filepath.Join(dir, "rev"))
	app := rev.State.Apps[0]
	a := &Applier{opts: Options{EnvDir: envDir}}
	f.Fuzz(func(t *testing.T, compose, env []byte) {
		if err := os.WriteFile(filepath.Join(rev.Dir, "apps", "web", "compose.yaml"), compose, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(envDir, "web.env"), env, 0o600); err != nil {
			t.Fatal(err)
		}
		ap, err := a.load(context.Background(), rev, app)
		if err != nil {
			return
		}
		again, err := a.load(context.Background(), rev, app)
		if err != nil {
			t.Fatalf("second load failed: %v", err)
		}
		if !maps.Equal(ap.hashes, again.hashes) {
			t.Fatalf("hashes differ between two loads: %v, %v", ap.hashes, again.hashes)
		}
		for name, s := range ap.project.Services {
			switch {
			case s.Image == "":
				t.Fatalf("service %q has no image", name)
			case s.Build != nil || s.PullPolicy != types.PullPolicyNever:
				t.Fatalf("service %q: build %v, pull policy %q", name, s.Build, s.PullPolicy)
			case s.Labels[LabelConfigHash] != ap.hashes[name] || ap.hashes[name] == "":
				t.Fatalf("service %q: hash label %q, hash %q", name, s.Labels[LabelConfigHash], ap.hashes[name])
			case s.CustomLabels[api.ProjectLabel] != ProjectName(rev.Source, app.Name) || s.CustomLabels[LabelRevision] != rev.Digest || s.CustomLabels[LabelApp] != app.Name:
				t.Fatalf("service %q: labels %v", name, s.CustomLabels)
			}
		}
		if len(ap.hashes) != len(ap.project.Services) {
			t.Fatalf("%d hashes for %d services", len(ap.hashes), len(ap.project.Services))
		}
	})
}

// revisionIn is a revision in dir with one Compose app, "web", from
// apps/web.
func revisionIn(f *testing.F, dir string) state.Revision {
	files := map[string]string{
		state.FileName:          stateYAML("web"),
		"apps/web/compose.yaml": "services:\n  web:\n    image: x:1\n",
	}
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	st, err := state.Load(os.DirFS(dir))
	if err != nil {
		f.Fatal(err)
	}
	return state.Revision{Source: "s", Digest: "sha256:" + strings.Repeat("c", 64), Dir: dir, State: st}
}

// FuzzEnvFile parses arbitrary device env files (/etc/berth/env/<app>.env).
// It must never panic nor read the agent's own environment; every name it
// returns is a non-empty name without '=', whitespace or NUL; and a value
// without quotes, backslashes or line breaks written back single-quoted
// reads back the same.
func FuzzEnvFile(f *testing.F) {
	for _, s := range []string{
		"PORT=18080\nMODE=prod\n",
		"export A=1\n# comment\n\nB='single $A'\nC=\"double ${A} \\n\"\nD=unquoted # trailing\n",
		"E\nF=\nG=${HOME}\nH=\"multi\nline\"\n",
		"I: yaml-style\nJ==\n=K\n",
		"\xef\xbb\xbfL=bom\r\nM=crlf\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Setenv("BERTH_FUZZ_SECRET", "agent-env")
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := parseEnvFile(data)
		if err != nil {
			return
		}
		for k, v := range env {
			if k == "" || strings.ContainsAny(k, "= \t\r\n\x00") {
				t.Fatalf("name %q", k)
			}
			if k == "BERTH_FUZZ_SECRET" && v == "agent-env" || strings.Contains(v, "agent-env") && !bytes.Contains(data, []byte("agent-env")) {
				t.Fatalf("%s=%q comes from the agent's environment", k, v)
			}
			if strings.ContainsAny(v, "'\\\n\r") {
				continue // compose-go reads \ as an escape even in single quotes
			}
			back, err := parseEnvFile([]byte(k + "='" + v + "'\n"))
			if err != nil || len(back) != 1 || back[k] != v {
				t.Fatalf("%s=%q written back reads %v, %v", k, v, back, err)
			}
		}
	})
}

// FuzzLoadAnswer reads arbitrary answers to an image load, as the Docker
// Engine streams them. It must never panic; an answer whose JSON messages
// all decode without an error message succeeds; an error message, or a
// stream that does not decode, fails, with the engine's message.
func FuzzLoadAnswer(f *testing.F) {
	for _, s := range []string{
		`{"stream":"Loaded image: registry.plant.local/acme/web:berth-sha256-` + strings.Repeat("a", 64) + `\n"}` + "\r\n",
		`{"status":"Loading layer","progressDetail":{"current":32768,"total":1024000},"progress":"[=>   ] 32.77kB/1.024MB","id":"5f70bf18a086"}` + "\r\n" + `{"stream":"Loaded image ID: sha256:` + strings.Repeat("b", 64) + `\n"}`,
		`{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}`,
		`{"error":"open /var/lib/docker/tmp/docker-import-1/repositories: no such file or directory"}`,
		`{"stream":"x"}{"error":5}`, `{"errorDetail":{"message":""},"error":"plain"}`, ``, `null`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := readLoadAnswer(bytes.NewReader(data))
		want := expectedLoadAnswer(data)
		switch {
		case errors.Is(want, errAmbiguous): // no verdict
		case want == nil && err != nil:
			t.Fatalf("clean answer refused: %v", err)
		case want != nil && err == nil:
			t.Fatalf("answer with %v accepted", want)
		case want != nil && !errors.Is(want, errUndecodable) && err.Error() != want.Error():
			t.Fatalf("error %q, want the engine's %q", err, want)
		}
	})
}

var (
	errUndecodable = errors.New("undecodable")
	errAmbiguous   = errors.New("a key given twice")
)

// pick is the value of key in m as encoding/json finds it (any case);
// false when m has it in more than one spelling.
func pick(m map[string]any, key string) (any, bool) {
	var v any
	n := 0
	for k, x := range m {
		if strings.EqualFold(k, key) {
			v, n = x, n+1
		}
	}
	return v, n <= 1
}

// repeated reports whether the JSON object raw gives one of keys (in any
// case) twice, at its top or, for errorDetail, inside it: encoding/json
// then decodes every occurrence, the last winning or a mistyped one
// failing the message, which a map does not show (found by this fuzzer:
// {"error":{"":""},"error":""}).
func repeated(raw json.RawMessage, keys ...string) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	seen := map[string]int{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		k, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return false
		}
		for _, want := range keys {
			if strings.EqualFold(k, want) {
				seen[want]++
				if seen[want] > 1 || strings.EqualFold(want, "errorDetail") && repeated(v, "message") {
					return true
				}
			}
		}
	}
	return false
}

// expectedLoadAnswer is what reading data must give, decoded generically.
func expectedLoadAnswer(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return nil
		} else if err != nil {
			return errUndecodable
		}
		if repeated(raw, "error", "errorDetail") {
			return errAmbiguous
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return errUndecodable
		}
		m, ok := v.(map[string]any)
		if !ok {
			if v == nil {
				continue // null decodes into an empty message
			}
			return errUndecodable
		}
		// encoding/json matches keys case-insensitively ("errOr" is the
		// error, found by this fuzzer); with two spellings of one key the
		// last in the object wins, which a map cannot tell: no verdict.
		e, ok := pick(m, "error")
		if !ok {
			return errAmbiguous
		}
		var msg, detail string
		if e != nil {
			if msg, ok = e.(string); !ok {
				return errUndecodable
			}
		}
		d, ok := pick(m, "errorDetail")
		if !ok {
			return errAmbiguous
		}
		if d != nil {
			dm, ok := d.(map[string]any)
			if !ok {
				return errUndecodable
			}
			mm, ok := pick(dm, "message")
			if !ok {
				return errAmbiguous
			}
			if mm != nil {
				if detail, ok = mm.(string); !ok {
					return errUndecodable
				}
			}
		}
		if detail != "" {
			return errors.New(detail)
		}
		if msg != "" {
			return errors.New(msg)
		}
	}
}

// TestReadLoadAnswerBounds checks the bounds FuzzLoadAnswer cannot reach:
// one message over maxLoadMessage, and an answer over maxLoadAnswer whose
// error comes after the cap, are errors rather than memory or a silent
// success.
func TestReadLoadAnswerBounds(t *testing.T) {
	big := `{"stream":"` + strings.Repeat("x", maxLoadMessage) + `"}`
	if err := readLoadAnswer(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), fmt.Sprint(maxLoadMessage)) {
		t.Errorf("message over the cap: %v", err)
	}
	line := `{"status":"Loading layer","progressDetail":{"current":1,"total":2}}` + "\r\n"
	long := io.MultiReader(
		strings.NewReader(strings.Repeat(line, maxLoadAnswer/len(line)+1)),
		strings.NewReader(`{"error":"disk full"}`))
	if err := readLoadAnswer(long); err == nil || !strings.Contains(err.Error(), fmt.Sprint(maxLoadAnswer)) {
		t.Errorf("answer over the cap: %v", err)
	}
	ok := strings.Repeat(line, 1000) + `{"stream":"Loaded image: x:y\n"}`
	if err := readLoadAnswer(strings.NewReader(ok)); err != nil {
		t.Errorf("a normal answer: %v", err)
	}
}

// TestParseEnvFileNoName is FuzzEnvFile's finding: compose-go reads a line
// "=value" as the variable "", which berth passed on silently.
func TestParseEnvFileNoName(t *testing.T) {
	for _, data := range []string{"=K\n", "A=1\n =x\n"} {
		if env, err := parseEnvFile([]byte(data)); err == nil || !strings.Contains(err.Error(), "without a variable name") {
			t.Errorf("%q: %v, %v; want an error", data, env, err)
		}
	}
	if env, err := parseEnvFile([]byte("A=1\nB==\n")); err != nil || env["A"] != "1" || env["B"] != "=" {
		t.Errorf("valid file: %v, %v", env, err)
	}
}
