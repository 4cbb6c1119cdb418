package spec

import (
	"encoding/json"
	"errors"
	"testing"
)

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(manifestJSON("7", goodBundle, goodDep)))
	f.Add([]byte(`{"manifestVersion": 8, "bundle": null, "deployments": []}`))
	f.Add([]byte(`{"manifestVersion": 1, "manifestVersion": 1}`))
	f.Add([]byte(`[[[[{}]]]]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if m != nil || !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("m = %v, err = %v", m, err)
			}
			return
		}
		if m.ManifestVersion == 0 || (m.Bundle == nil) != (len(m.Deployments) == 0) {
			t.Fatalf("invalid manifest accepted: %+v", m)
		}
		ids := map[string]bool{}
		for _, d := range m.Deployments {
			if !ValidDigest(d.Digest) || !ValidDeploymentID(d.DeploymentID) || ids[d.DeploymentID] || checkContentURL(d.URL) != nil {
				t.Fatalf("invalid deployment accepted: %+v", d)
			}
			ids[d.DeploymentID] = true
		}
		// What was accepted round-trips.
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseManifest(raw); err != nil {
			t.Fatalf("re-parse of %s: %v", raw, err)
		}
	})
}

func FuzzParseDeployment(f *testing.F) {
	f.Add([]byte(currentYAML))
	f.Add([]byte(legacyYAML))
	f.Add([]byte("id: x\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseDeployment("d.yaml", data)
		if err != nil {
			if d != nil || !errors.Is(err, ErrInvalidDeployment) {
				t.Fatalf("d = %v, err = %v", d, err)
			}
			return
		}
		if !ValidDeploymentID(d.ID) || d.ApplicationID == "" || len(d.Profile.Components) == 0 {
			t.Fatalf("invalid deployment accepted: %+v", d)
		}
		if d.Profile.Type != TypeHelm && d.Profile.Type != TypeCompose {
			t.Fatalf("type %q accepted", d.Profile.Type)
		}
		for _, c := range d.Profile.Components {
			if !repoRE.MatchString(c.Repository) || !tagRE.MatchString(c.Revision) {
				t.Fatalf("component accepted: %+v", c)
			}
		}
		_ = d.Profile.Constraints.Eligible(caps())
	})
}

func FuzzParseProblem(f *testing.F) {
	f.Add([]byte(`{"type": "https://docs.margo.org/specification/problem-types#not-authorized", "status": 403, "retryable": false}`))
	f.Add([]byte(`{"status": 503, "retryAfterSeconds": 30, "backoffStrategy": "exponential", "errors": [{"field": "a"}]}`))
	f.Add([]byte(`"x"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProblem(data)
		if err != nil {
			if p != nil || !errors.Is(err, ErrInvalidProblem) {
				t.Fatalf("p = %v, err = %v", p, err)
			}
			return
		}
		if p.Type == "" || len(p.Title) > maxProblemText+4 || len(p.Errors) > maxProblemErrors {
			t.Fatalf("problem accepted: %+v", p)
		}
		_ = p.String()
	})
}
