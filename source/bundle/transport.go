package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

// Transport serves the bundle's content as a read-only OCI distribution
// registry for any host: GET and HEAD of /v2/, /v2/<repo>/manifests/<tag
// or digest>, /v2/<repo>/blobs/<digest>, /v2/<repo>/referrers/<digest>
// (with ?artifactType=) and /v2/<repo>/tags/list (with ?n= and ?last=).
// Repository <repo> on host <host> is the bundle's content recorded under
// the original name <host>/<repo>; Docker Hub's hosts (index.docker.io,
// registry-1.docker.io) are docker.io. A repository serves exactly the
// manifests and blobs reachable from what was recorded under its name.
//
// Every manifest and blob served is checked against its digest while it
// is streamed: altered content ends the body with an error wrapping
// ErrDigestMismatch that names the blob, instead of io.EOF. Anything
// unknown is a 404 with the distribution error JSON (NAME_UNKNOWN,
// MANIFEST_UNKNOWN, BLOB_UNKNOWN); other methods are refused with 405.
//
// It lets registry clients read a bundle offline, unchanged: source/fetch
// and source/oci (oci.Options.WrapTransport), go-containerregistry and so
// cosign (remote.WithTransport), oras-go (a remote.Repository whose
// Client uses it). The scheme is ignored, so https and PlainHTTP alike
// work. It stays usable until Close.
func (b *Bundle) Transport() http.RoundTripper { return bundleTransport{b} }

type bundleTransport struct{ b *Bundle }

// RoundTrip implements http.RoundTripper.
func (t bundleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	return t.b.respond(req), nil
}

// The distribution spec's repository name grammar.
var repoNameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// dockerHubHosts are the API hosts of docker.io.
var dockerHubHosts = map[string]bool{"index.docker.io": true, "registry-1.docker.io": true, "registry.hub.docker.com": true}

// lookupRepo finds the bundle repository for a request's host and path
// name.
func (b *Bundle) lookupRepo(host, name string) (*repo, string) {
	host = strings.ToLower(host)
	if dockerHubHosts[host] || strings.HasSuffix(host, ":443") && dockerHubHosts[strings.TrimSuffix(host, ":443")] {
		host = "docker.io"
	}
	for _, h := range []string{host, strings.TrimSuffix(strings.TrimSuffix(host, ":443"), ":80")} {
		if rp := b.repos[h+"/"+name]; rp != nil {
			return rp, h + "/" + name
		}
	}
	return nil, host + "/" + name
}

// respond answers one registry request.
func (b *Bundle) respond(req *http.Request) *http.Response {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return errResponse(req, http.StatusMethodNotAllowed, "UNSUPPORTED", "the bundle is read-only")
	}
	p := req.URL.Path
	if p == "/v2" || p == "/v2/" {
		return jsonResponse(req, http.StatusOK, "application/json", []byte("{}"), "")
	}
	if !strings.HasPrefix(p, "/v2/") {
		return errResponse(req, http.StatusNotFound, "NOT_FOUND", "not a registry API path")
	}
	rest := p[len("/v2/"):]
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return b.serveTags(req, name)
	}
	for _, kind := range []string{"manifests", "blobs", "referrers"} {
		i := strings.LastIndex(rest, "/"+kind+"/")
		if i <= 0 {
			continue
		}
		name, ref := rest[:i], rest[i+len(kind)+2:]
		if !repoNameRE.MatchString(name) {
			return errResponse(req, http.StatusNotFound, "NAME_INVALID", "invalid repository name "+strconv.Quote(name))
		}
		rp, full := b.lookupRepo(req.URL.Host, name)
		if rp == nil {
			return errResponse(req, http.StatusNotFound, "NAME_UNKNOWN", "repository "+full+" is not in the bundle")
		}
		switch kind {
		case "manifests":
			return b.serveManifest(req, rp, full, ref)
		case "blobs":
			return b.serveBlob(req, rp, full, ref)
		default:
			return b.serveReferrers(req, rp, ref)
		}
	}
	return errResponse(req, http.StatusNotFound, "NOT_FOUND", "unknown registry API path")
}

func (b *Bundle) serveManifest(req *http.Request, rp *repo, full, ref string) *http.Response {
	d := digest.Digest(ref)
	if strings.Contains(ref, ":") {
		if d.Validate() != nil {
			return errResponse(req, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest "+strconv.Quote(ref))
		}
	} else {
		var ok bool
		if d, ok = rp.tags[ref]; !ok {
			return errResponse(req, http.StatusNotFound, "MANIFEST_UNKNOWN", "tag "+ref+" of "+full+" is not in the bundle")
		}
	}
	n := b.nodes[d]
	if n == nil || !n.manifest || !rp.members[d] {
		return errResponse(req, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest "+ref+" of "+full+" is not in the bundle")
	}
	return b.blobResponse(req, n.desc.MediaType, d)
}

func (b *Bundle) serveBlob(req *http.Request, rp *repo, full, ref string) *http.Response {
	d := digest.Digest(ref)
	if d.Validate() != nil {
		return errResponse(req, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest "+strconv.Quote(ref))
	}
	if !rp.members[d] {
		return errResponse(req, http.StatusNotFound, "BLOB_UNKNOWN", "blob "+ref+" of "+full+" is not in the bundle")
	}
	return b.blobResponse(req, "application/octet-stream", d)
}

// blobResponse streams a blob, digest-checked.
func (b *Bundle) blobResponse(req *http.Request, mediaType string, d digest.Digest) *http.Response {
	e := b.tar.blobs[d]
	resp := newResponse(req, http.StatusOK)
	resp.Header.Set("Content-Type", mediaType)
	resp.Header.Set("Docker-Content-Digest", d.String())
	resp.Header.Set("Content-Length", strconv.FormatInt(e.size, 10))
	resp.ContentLength = e.size
	if req.Method == http.MethodHead {
		return resp
	}
	rc, err := b.openBlob(d)
	if err != nil {
		return errResponse(req, http.StatusNotFound, "BLOB_UNKNOWN", err.Error())
	}
	resp.Body = rc
	return resp
}

func (b *Bundle) serveReferrers(req *http.Request, rp *repo, ref string) *http.Response {
	d := digest.Digest(ref)
	if d.Validate() != nil {
		return errResponse(req, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest "+strconv.Quote(ref))
	}
	filter := req.URL.Query().Get("artifactType")
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	for _, r := range rp.refs[d] {
		n := b.nodes[r]
		if filter != "" && n.artifact != filter {
			continue
		}
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{
			MediaType: n.desc.MediaType, Digest: n.desc.Digest, Size: n.desc.Size,
			ArtifactType: n.artifact, Annotations: n.annot,
		})
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		return errResponse(req, http.StatusInternalServerError, "UNKNOWN", err.Error())
	}
	filtered := ""
	if filter != "" {
		filtered = "artifactType"
	}
	return jsonResponse(req, http.StatusOK, ocispec.MediaTypeImageIndex, raw, filtered)
}

func (b *Bundle) serveTags(req *http.Request, name string) *http.Response {
	if !repoNameRE.MatchString(name) {
		return errResponse(req, http.StatusNotFound, "NAME_INVALID", "invalid repository name "+strconv.Quote(name))
	}
	rp, full := b.lookupRepo(req.URL.Host, name)
	if rp == nil {
		return errResponse(req, http.StatusNotFound, "NAME_UNKNOWN", "repository "+full+" is not in the bundle")
	}
	tags := make([]string, 0, len(rp.tags))
	for t := range rp.tags {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	q := req.URL.Query()
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(tags, last)
		for i < len(tags) && tags[i] <= last {
			i++
		}
		tags = tags[i:]
	}
	if n, err := strconv.Atoi(q.Get("n")); err == nil && n >= 0 && n < len(tags) {
		tags = tags[:n]
	}
	raw, err := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{name, tags})
	if err != nil {
		return errResponse(req, http.StatusInternalServerError, "UNKNOWN", err.Error())
	}
	return jsonResponse(req, http.StatusOK, "application/json", raw, "")
}

func newResponse(req *http.Request, status int) *http.Response {
	return &http.Response{
		Status:     fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode: status,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header: http.Header{
			"Docker-Distribution-Api-Version": {"registry/2.0"},
		},
		Body:    http.NoBody,
		Request: req,
	}
}

func jsonResponse(req *http.Request, status int, mediaType string, raw []byte, filtersApplied string) *http.Response {
	resp := newResponse(req, status)
	resp.Header.Set("Content-Type", mediaType)
	resp.Header.Set("Content-Length", strconv.Itoa(len(raw)))
	if filtersApplied != "" {
		resp.Header.Set("OCI-Filters-Applied", filtersApplied)
	}
	resp.ContentLength = int64(len(raw))
	if req.Method != http.MethodHead {
		resp.Body = io.NopCloser(bytes.NewReader(raw))
	}
	return resp
}

// errResponse is a distribution error response.
func errResponse(req *http.Request, status int, code, msg string) *http.Response {
	raw, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	return jsonResponse(req, status, "application/json", raw, "")
}

// Remote returns the delivery path's view of the bundle, a read-only
// registry serving what it holds under the original names (Transport), and
// the reference of its root (with its digest): verify and extract the root
// with it exactly as from a registry. opts may set the user agent; the
// transport is the bundle's.
func (b *Bundle) Remote(opts oci.Options) (*deliver.Remote, oci.Reference, error) {
	rootRef, desc := b.Root()
	root, err := oci.ParseReference(rootRef)
	if err == nil && root.Digest != "" && root.Digest != desc.Digest.String() {
		err = fmt.Errorf("the root reference %s does not name its manifest %s", rootRef, desc.Digest)
	}
	if err != nil {
		return nil, oci.Reference{}, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	opts.Transport = b.Transport()
	c, err := oci.NewClient(opts)
	if err != nil {
		return nil, oci.Reference{}, err
	}
	return &deliver.Remote{Client: c, Local: true}, root.WithDigest(desc.Digest.String()), nil
}
