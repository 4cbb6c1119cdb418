package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tarFile is one entry of a hand-made tar.
type tarFile struct {
	name string
	typ  byte
	data []byte
	link string
	pax  map[string]string
}

// layoutFiles is a minimal valid bundle: a state manifest, its config and
// layer, oci-layout and index.json.
type layoutFiles struct {
	files   []tarFile
	state   digest.Digest
	layer   digest.Digest
	index   ocispec.Index
	mraw    []byte
	config  []byte
	content []byte
}

const stateRef = "registry.example:5000/fleet/line-3:v1"

func minimalLayout() *layoutFiles {
	l := &layoutFiles{config: []byte("{}"), content: []byte("pretend tar+gzip")}
	cfg := ocispec.Descriptor{MediaType: "application/vnd.cncf.flux.config.v1+json", Digest: digest.FromBytes(l.config), Size: int64(len(l.config))}
	lay := ocispec.Descriptor{MediaType: "application/vnd.cncf.flux.content.v1.tar+gzip", Digest: digest.FromBytes(l.content), Size: int64(len(l.content))}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{lay}}
	m.SchemaVersion = 2
	l.mraw, _ = json.Marshal(m)
	l.state, l.layer = digest.FromBytes(l.mraw), lay.Digest
	l.index = ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Annotations: map[string]string{AnnotationRoot: stateRef},
		Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: l.state, Size: int64(len(l.mraw)),
			Annotations: map[string]string{AnnotationRefName: stateRef, AnnotationRole: string(RoleState)}}}}
	l.index.SchemaVersion = 2
	l.files = []tarFile{
		{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: blobPath(cfg.Digest), data: l.config},
		{name: blobPath(lay.Digest), data: l.content},
		{name: blobPath(l.state), data: l.mraw},
	}
	return l
}

// tar renders the files and index.json.
func (l *layoutFiles) tar(t testing.TB) []byte {
	t.Helper()
	idx, _ := json.Marshal(l.index)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range append(l.files, tarFile{name: "index.json", data: idx}) {
		typ := f.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: f.name, Typeflag: typ, Mode: 0o644, Size: int64(len(f.data)), Linkname: f.link, PAXRecords: f.pax}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %s: %v", f.name, err)
		}
		if typ == tar.TypeReg {
			tw.Write(f.data)
		}
	}
	tw.Close()
	return buf.Bytes()
}

func writeTemp(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenMinimal(t *testing.T) {
	l := minimalLayout()
	l.files = append([]tarFile{{name: "./blobs/", typ: tar.TypeDir}, {name: "blobs/sha256", typ: tar.TypeDir}}, l.files...)
	b, err := Open(context.Background(), writeTemp(t, l.tar(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ref, desc := b.Root()
	if ref != stateRef || desc.Digest != l.state || len(b.Images()) != 0 {
		t.Fatalf("Root() = %s %s, Images() = %v", ref, desc.Digest, b.Images())
	}
	if err := b.Verify(context.Background(), VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefuses(t *testing.T) {
	big := bytes.Repeat([]byte(" "), MaxIndexSize+1)
	for _, tc := range []struct {
		name   string
		edit   func(l *layoutFiles)
		raw    func(b []byte) []byte
		err    error
		substr string
	}{
		{name: "gzip", raw: func(b []byte) []byte {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(b)
			zw.Close()
			return buf.Bytes()
		}, err: ErrInvalidBundle, substr: "gzip-compressed"},
		{name: "not a tar", raw: func([]byte) []byte { return bytes.Repeat([]byte("x"), 2048) }, err: ErrInvalidBundle, substr: "reading the tar"},
		{name: "empty", raw: func([]byte) []byte { return nil }, err: ErrInvalidBundle, substr: "no oci-layout"},
		{name: "truncated", raw: func(b []byte) []byte { return b[:len(b)-1500] }, err: ErrInvalidBundle},
		{name: "traversal", edit: func(l *layoutFiles) { l.files = append(l.files, tarFile{name: "../evil", data: []byte("x")}) }, err: ErrInvalidBundle, substr: "unsafe path"},
		{name: "traversal inside", edit: func(l *layoutFiles) { l.files = append(l.files, tarFile{name: "blobs/../../evil", data: []byte("x")}) }, err: ErrInvalidBundle, substr: "unsafe path"},
		{name: "absolute", edit: func(l *layoutFiles) { l.files[0].name = "/oci-layout" }, err: ErrInvalidBundle, substr: "unsafe path"},
		{name: "duplicate", edit: func(l *layoutFiles) { l.files = append(l.files, l.files[2]) }, err: ErrInvalidBundle, substr: "appears twice"},
		{name: "duplicate via ./", edit: func(l *layoutFiles) {
			d := l.files[2]
			d.name = "./" + d.name
			l.files = append(l.files, d)
		}, err: ErrInvalidBundle, substr: "appears twice"},
		{name: "symlink", edit: func(l *layoutFiles) {
			l.files[2] = tarFile{name: l.files[2].name, typ: tar.TypeSymlink, link: "/etc/passwd"}
		}, err: ErrInvalidBundle, substr: "not a regular file"},
		{name: "hard link", edit: func(l *layoutFiles) {
			l.files = append(l.files, tarFile{name: blobPath(digest.FromString("x")), typ: tar.TypeLink, link: "oci-layout"})
		}, err: ErrInvalidBundle, substr: "not a regular file"},
		{name: "device", edit: func(l *layoutFiles) {
			l.files = append(l.files, tarFile{name: blobPath(digest.FromString("x")), typ: tar.TypeChar})
		}, err: ErrInvalidBundle, substr: "not a regular file"},
		{name: "other directory", edit: func(l *layoutFiles) { l.files = append(l.files, tarFile{name: "etc/", typ: tar.TypeDir}) }, err: ErrInvalidBundle, substr: "unexpected directory"},
		{name: "unexpected file", edit: func(l *layoutFiles) { l.files = append(l.files, tarFile{name: "manifest.json", data: []byte("[]")}) }, err: ErrInvalidBundle, substr: "unexpected file"},
		{name: "bad blob name", edit: func(l *layoutFiles) { l.files = append(l.files, tarFile{name: "blobs/sha256/abc", data: []byte("x")}) }, err: ErrInvalidBundle, substr: "not a blob name"},
		// archive/tar writes no GNU.sparse records: write a stand-in and
		// rename it in the PAX header's data (no checksum covers it).
		{name: "sparse", edit: func(l *layoutFiles) {
			l.files = append(l.files, tarFile{name: blobPath(digest.FromString("x")), data: []byte("x"), pax: map[string]string{"XXX.sparse.name": "x"}})
		}, raw: func(b []byte) []byte {
			return bytes.Replace(b, []byte("XXX.sparse.name"), []byte("GNU.sparse.name"), 1)
		}, err: ErrInvalidBundle, substr: "sparse"},
		{name: "no index", edit: func(l *layoutFiles) {}, raw: func(b []byte) []byte {
			l := minimalLayout()
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, f := range l.files {
				tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Size: int64(len(f.data)), Mode: 0o644})
				tw.Write(f.data)
			}
			tw.Close()
			return buf.Bytes()
		}, err: ErrInvalidBundle, substr: "no index.json"},
		{name: "layout version", edit: func(l *layoutFiles) { l.files[0].data = []byte(`{"imageLayoutVersion":"2.0.0"}`) }, err: ErrInvalidBundle, substr: "layout version"},
		{name: "huge index", edit: func(l *layoutFiles) { l.index.Annotations["pad"] = string(big) }, err: ErrTooLarge, substr: "index.json"},
		{name: "index not json", raw: func(b []byte) []byte {
			return bytes.Replace(b, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index`), []byte(`["schemaVersion":2,"mediaType":"application/vnd.oci.image.index`), 1)
		}, err: ErrInvalidBundle, substr: "index.json"},
		{name: "no root", edit: func(l *layoutFiles) { delete(l.index.Annotations, AnnotationRoot) }, err: ErrInvalidBundle, substr: "not a berth bundle"},
		{name: "no items", edit: func(l *layoutFiles) { l.index.Manifests = nil }, err: ErrInvalidBundle, substr: "lists nothing"},
		{name: "bad role", edit: func(l *layoutFiles) { l.index.Manifests[0].Annotations[AnnotationRole] = "other" }, err: ErrInvalidBundle, substr: "role"},
		{name: "no ref name", edit: func(l *layoutFiles) { delete(l.index.Manifests[0].Annotations, AnnotationRefName) }, err: ErrInvalidBundle, substr: "ref.name"},
		{name: "ref names another digest", edit: func(l *layoutFiles) {
			l.index.Manifests[0].Annotations[AnnotationRefName] = "registry.example:5000/fleet/line-3@" + l.layer.String()
			l.index.Annotations[AnnotationRoot] = l.index.Manifests[0].Annotations[AnnotationRefName]
		}, err: ErrInvalidBundle, substr: "another digest"},
		{name: "state is not the root", edit: func(l *layoutFiles) { l.index.Annotations[AnnotationRoot] = "registry.example:5000/fleet/line-3:v2" }, err: ErrInvalidBundle, substr: "not the root"},
		{name: "no state", edit: func(l *layoutFiles) { l.index.Manifests[0].Annotations[AnnotationRole] = string(RoleImage) }, err: ErrInvalidBundle, substr: "0 state"},
		{name: "listed twice", edit: func(l *layoutFiles) { l.index.Manifests = append(l.index.Manifests, l.index.Manifests[0]) }, err: ErrInvalidBundle, substr: "listed twice"},
		{name: "missing layer", edit: func(l *layoutFiles) { l.files = append(l.files[:2], l.files[3:]...) }, err: ErrInvalidBundle, substr: "layer of state " + stateRef + ") is missing"},
		{name: "missing manifest", edit: func(l *layoutFiles) { l.files = l.files[:3] }, err: ErrInvalidBundle, substr: "is missing"},
		{name: "size mismatch", edit: func(l *layoutFiles) { l.index.Manifests[0].Size++ }, err: ErrInvalidBundle, substr: "its descriptor says"},
		{name: "manifest altered", edit: func(l *layoutFiles) {
			l.files[3].data = bytes.Replace(l.mraw, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":3`), 1)
		}, err: ErrDigestMismatch, substr: l0().state.String()},
		{name: "manifest too large", edit: func(l *layoutFiles) {
			l.files[3].data = append(l.mraw, bytes.Repeat([]byte(" "), MaxManifestSize)...)
			d := digest.FromBytes(l.files[3].data)
			l.files[3].name = blobPath(d)
			l.index.Manifests[0].Digest, l.index.Manifests[0].Size = d, int64(len(l.files[3].data))
		}, err: ErrTooLarge},
		{name: "media type differs", edit: func(l *layoutFiles) { l.index.Manifests[0].MediaType = ocispec.MediaTypeImageIndex }, err: ErrInvalidBundle, substr: "differs"},
		{name: "not a manifest", edit: func(l *layoutFiles) {
			raw := bytes.Replace(l.mraw, []byte(ocispec.MediaTypeImageManifest), []byte("application/x-other"), 1)
			d := digest.FromBytes(raw)
			l.files[3] = tarFile{name: blobPath(d), data: raw}
			l.index.Manifests[0].MediaType, l.index.Manifests[0].Digest, l.index.Manifests[0].Size = "", d, int64(len(raw))
		}, err: ErrInvalidBundle, substr: "not an image manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := minimalLayout()
			if tc.edit != nil {
				tc.edit(l)
			}
			raw := l.tar(t)
			if tc.raw != nil {
				raw = tc.raw(raw)
			}
			b, err := Open(context.Background(), writeTemp(t, raw))
			if err == nil {
				b.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("err = %v; want %v saying %q", err, tc.err, tc.substr)
			}
		})
	}
}

// l0 is the minimal layout's digests, for expectations.
func l0() *layoutFiles { return minimalLayout() }

// FuzzOpen opens arbitrary files as bundles: no panic, no hang, and what
// opens serves and verifies without panicking.
func FuzzOpen(f *testing.F) {
	l := minimalLayout()
	f.Add(l.tar(f))
	l.files = append(l.files, tarFile{name: "blobs/", typ: tar.TypeDir})
	f.Add(l.tar(f))
	l = minimalLayout()
	l.files[2] = tarFile{name: l.files[2].name, typ: tar.TypeSymlink, link: "../x"}
	f.Add(l.tar(f))
	l = minimalLayout()
	l.index.Manifests[0].Annotations[AnnotationRole] = "image"
	f.Add(l.tar(f))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		b, err := Open(ctx, writeTemp(t, data))
		if err != nil {
			return
		}
		defer b.Close()
		ref, _ := b.Root()
		b.Images()
		b.Items()
		b.Summary()
		_ = b.Verify(ctx, VerifyOptions{})
		r, _ := parseRefName(ref)
		host, path, _ := strings.Cut(r.repo, "/")
		for _, p := range []string{"/v2/", "/v2/" + path + "/tags/list", "/v2/" + path + "/manifests/" + r.tag, "/v2/" + path + "/referrers/" + string(r.digest)} {
			req, err := http.NewRequest("GET", "https://"+host+p, nil)
			if err != nil {
				continue
			}
			resp, err := b.Transport().RoundTrip(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		for _, it := range b.Items() {
			req, _ := http.NewRequest("GET", "https://"+host+"/v2/"+path+"/blobs/"+it.Digest.String(), nil)
			if resp, err := b.Transport().RoundTrip(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	})
}
