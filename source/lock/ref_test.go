package lock

import (
	"strings"
	"testing"
)

func TestParseImage(t *testing.T) {
	tests := []struct {
		in, repo, tag, digest, resolvable, err string
	}{
		{in: "nginx", repo: "docker.io/library/nginx", resolvable: "docker.io/library/nginx:latest"},
		{in: "nginx:1.27", repo: "docker.io/library/nginx", tag: "1.27", resolvable: "docker.io/library/nginx:1.27"},
		{in: "acme/web", repo: "docker.io/acme/web", resolvable: "docker.io/acme/web:latest"},
		{in: "docker.io/nginx", repo: "docker.io/library/nginx", resolvable: "docker.io/library/nginx:latest"},
		{in: "index.docker.io/acme/web:2", repo: "docker.io/acme/web", tag: "2", resolvable: "docker.io/acme/web:2"},
		{in: "localhost/web", repo: "localhost/web", resolvable: "localhost/web:latest"},
		{in: "localhost:5000/web:1", repo: "localhost:5000/web", tag: "1", resolvable: "localhost:5000/web:1"},
		{in: "registry.local:5000/acme/web:1.2", repo: "registry.local:5000/acme/web", tag: "1.2", resolvable: "registry.local:5000/acme/web:1.2"},
		{in: "[::1]:5000/web:1", repo: "[::1]:5000/web", tag: "1", resolvable: "[::1]:5000/web:1"},
		{in: "Registry.Example.com/a/b_c__d-e:v", repo: "Registry.Example.com/a/b_c__d-e", tag: "v", resolvable: "Registry.Example.com/a/b_c__d-e:v"},
		{in: "ghcr.io/a/b:1@" + pinned, repo: "ghcr.io/a/b", tag: "1", digest: pinned, resolvable: "ghcr.io/a/b:1"},
		{in: "ghcr.io/a/b@" + pinned, repo: "ghcr.io/a/b", digest: pinned, resolvable: "ghcr.io/a/b:latest"},
		{in: "${REG}/web:1", err: "interpolation"},
		{in: "web:$TAG", err: "interpolation"},
		{in: "", err: "is empty"},
		{in: "Nginx", err: "must be lowercase"},
		{in: "ghcr.io/Acme/web", err: "must be lowercase"},
		{in: strings.Repeat("a", 64), err: "image ID"},
		{in: "ghcr.io/a/b@sha512:" + strings.Repeat("a", 128), err: "only sha256"},
		{in: "ghcr.io/a/b@sha256:abc", err: "not a valid reference"},
		{in: "ghcr.io/a//b", err: "not a valid reference"},
		{in: "ghcr.io/a/b:", err: "not a valid reference"},
		{in: "ghcr.io/a/-b", err: "not a valid reference"},
		{in: "ghcr.io/a/b:-1", err: "not a valid reference"},
		{in: "web 1", err: "not a valid reference"},
		{in: "ghcr.io/a/" + strings.Repeat("b", 250), err: "longer than 255"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := parseImage(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.repository != tt.repo || r.tag != tt.tag || r.digest != tt.digest || r.resolvable() != tt.resolvable {
				t.Errorf("got %+v %q", r, r.resolvable())
			}
		})
	}
}
