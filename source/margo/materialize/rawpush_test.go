package materialize_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/source/margo/materialize"
	"github.com/berth-dev/berth/source/oci"
)

// writeTraversalArchive writes a Compose Archive with web/compose.yaml and
// an entry escaping with "..".
func writeTraversalArchive(t *testing.T, path, composeYAML string) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range []struct{ name, body string }{{"web/compose.yaml", composeYAML}, {"web/../../../tmp/berth-escaped", "x"}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		tw.Write([]byte(e.body))
	}
	tw.Close()
	gz.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pushRawCompose pushes the archive file as a Compose Archive, bypassing
// berth's own (checking) publisher, as a careless or hostile one would.
func pushRawCompose(t *testing.T, ctx context.Context, c *oci.Client, repo, tag, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := oci.ParseReference("oci://" + repo)
	r, err := c.Repository(ref)
	if err != nil {
		t.Fatal(err)
	}
	push := func(mt string, b []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if ok, _ := r.Exists(ctx, d); !ok {
			if err := r.Push(ctx, d, bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: materialize.ComposeArtifactType,
		Config: push(ocispec.MediaTypeEmptyJSON, []byte("{}")), Layers: []ocispec.Descriptor{push(materialize.ComposeLayerType, data)}}
	m.SchemaVersion = 2
	raw, _ := json.Marshal(m)
	if err := r.PushReference(ctx, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw))}, bytes.NewReader(raw), tag); err != nil {
		t.Fatal(err)
	}
}
