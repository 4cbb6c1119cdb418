package reconcile

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/reconcile/config"
	"github.com/berth-dev/berth/reconcile/store"
	"github.com/berth-dev/berth/source/bundle"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/lock"
	"github.com/berth-dev/berth/source/oci"
)

// makeBundle writes a bundle of repo@digest (and its signatures and the
// images of its lock) to a new file and returns its path.
func (e *env) makeBundle(repo, tag, digest string) string {
	e.t.Helper()
	out := filepath.Join(e.t.TempDir(), "site.tar")
	ctx := context.Background()
	state, err := (&deliver.Remote{Client: e.client}).Fetch(ctx, oci.Reference{Registry: e.host, Repository: repo, Tag: tag, Digest: digest}, nil, true)
	if err != nil {
		e.t.Fatalf("fetch the state: %v", err)
	}
	b, err := bundle.Create(ctx, e.client, bundle.CreateOptions{State: state, Output: out})
	if err != nil {
		e.t.Fatalf("bundle.Create: %v", err)
	}
	b.Close()
	return out
}

// bundleConfig is a configuration with one bundle source named usb.
func (e *env) bundleConfig(global, file, extra string) *bundleCfg {
	e.t.Helper()
	text := fmt.Sprintf("stateDir: STATE\nsocket: %s\n%s\nsources:\n  - name: usb\n    url: file://%s\n    interval: 1m\n    jitter: 0\n%s",
		filepath.Join(e.dir, "s.sock"), global, file, extra)
	if !strings.Contains(extra, "insecureSkipVerify") && !strings.Contains(extra, "verify:") {
		text += fmt.Sprintf("    verify: {keys: [%s]}\n", e.pub)
	}
	return &bundleCfg{text: text}
}

type bundleCfg struct{ text string }

func (c *bundleCfg) agent(t *testing.T, e *env, appliers ...Applier) *Agent {
	t.Helper()
	// Each agent has a state folder of its own.
	text := strings.Replace(c.text, "STATE", filepath.Join(t.TempDir(), "state"), 1)
	path := filepath.Join(e.dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(path, text)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", c.text, err)
	}
	return newAgent(t, cfg, appliers...)
}

// loader is an Applier that takes a bundle's images, reading each
// manifest through the bundle's transport.
type loader struct {
	*recorder
	mu     sync.Mutex
	loaded [][]string
	err    error
}

func (l *loader) LoadImages(ctx context.Context, images []string, rt http.RoundTripper) error {
	for _, ref := range images {
		d, err := name.NewDigest(ref)
		if err != nil {
			return err
		}
		if _, err := remote.Get(d, remote.WithTransport(rt), remote.WithContext(ctx)); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loaded = append(l.loaded, images)
	return l.err
}

var _ ImageLoader = (*loader)(nil)

// withImage pushes a random image to the registry and returns files of a
// state whose lock names it.
func (e *env) withImage(repo string) (map[string]string, string) {
	e.t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	ref, err := name.ParseReference(e.host + "/" + repo + ":1.0")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		e.t.Fatal(err)
	}
	d, _ := img.Digest()
	lf, _ := json.Marshal(map[string]any{"kind": "Lock", "entries": []lock.Entry{{
		App: "web", File: "apps/web/compose.yaml", Service: "web", Kind: lock.KindImage,
		Ref: e.host + "/" + repo + ":1.0@" + d.String(), Repository: e.host + "/" + repo, Digest: d.String(),
	}}})
	return withState(map[string]string{lock.LockFile: string(lf)}), e.host + "/" + repo + "@" + d.String()
}

func TestBundleSourceWithoutRegistry(t *testing.T) {
	e := newEnv(t)
	files, image := e.withImage("acme/hello")
	d1 := e.push("fleet/app", "stable", artifact{files: files, created: t0})
	file := e.makeBundle("fleet/app", "stable", "")
	e.srv.Close() // no registry from here on

	l := &loader{recorder: newRecorder()}
	a := e.bundleConfig("", file, "").agent(t, e, l)
	r := one(t, poll(a, "usb"), "applied", d1)
	want := store.Via{Manifest: store.ViaBundle, Signatures: store.ViaBundle, Layer: store.ViaBundle}
	if r.Via == nil || *r.Via != want {
		t.Errorf("via = %+v, want %+v", r.Via, want)
	}
	if len(l.loaded) != 1 || !slices.Equal(l.loaded[0], []string{image}) {
		t.Errorf("images loaded = %q, want [[%s]]", l.loaded, image)
	}
	c := l.last(t)
	if c.rev.State == nil || c.serial == "" || current(t, a, "usb") != d1 {
		t.Errorf("the bundle's state was not applied: %+v", c)
	}
	ss := sourceState(t, a.cfg, "usb")
	if ss.Applied.Tag != "stable" || !strings.Contains(ss.Applied.URL, "fleet/app:stable@"+d1) || !ss.Applied.Created.Equal(t0) {
		t.Errorf("applied = %+v", ss.Applied)
	}

	// Unchanged file: unchanged, nothing loaded again.
	one(t, poll(a, "usb"), "unchanged", d1)
	if len(l.loaded) != 1 {
		t.Errorf("images loaded again for an unchanged bundle")
	}

	// The stick is pulled out: an error, the device keeps what it runs.
	hidden := file + ".away"
	if err := os.Rename(file, hidden); err != nil {
		t.Fatal(err)
	}
	r = one(t, poll(a, "usb"), "error", "")
	if !strings.Contains(r.Error, file) || !strings.Contains(r.Error, "mounted") {
		t.Errorf("error = %q", r.Error)
	}
	if current(t, a, "usb") != d1 || sourceState(t, a.cfg, "usb").Applied.Digest != d1 {
		t.Error("a missing bundle changed the device")
	}
	if err := os.Rename(hidden, file); err != nil {
		t.Fatal(err)
	}
	one(t, poll(a, "usb"), "unchanged", d1)
}

func TestBundleSourceNewRevisionAndDowngrade(t *testing.T) {
	e := newEnv(t)
	d1 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	b1 := e.makeBundle("fleet/app", "stable", "")
	d2 := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0.Add(time.Hour)})
	b2 := e.makeBundle("fleet/app", "stable", "")
	file := filepath.Join(t.TempDir(), "site.tar")
	copyFile(t, b2, file)

	rec := newRecorder()
	a := e.bundleConfig("", file, "").agent(t, e, rec)
	one(t, poll(a, "usb"), "applied", d2)

	// The older bundle is brought back: the same downgrade rule refuses it.
	copyFile(t, b1, file)
	touch(t, file)
	r := one(t, poll(a, "usb"), "refused", d1)
	if !strings.Contains(r.Error, "downgrade refused") {
		t.Errorf("error = %q", r.Error)
	}
	if rec.count() != 1 || current(t, a, "usb") != d2 {
		t.Error("an older bundle rolled the device back")
	}
}

func TestBundleSourceRefusals(t *testing.T) {
	e := newEnv(t)
	signed := e.push("fleet/app", "stable", artifact{files: withState(nil), created: t0})
	good := e.makeBundle("fleet/app", "stable", "")
	unsigned := e.push("fleet/app", "unsigned", artifact{files: withState(nil), created: t0, unsigned: true})
	unsignedFile := e.makeBundle("fleet/app", "unsigned", "")

	t.Run("unsigned", func(t *testing.T) {
		rec := newRecorder()
		a := e.bundleConfig("", unsignedFile, "").agent(t, e, rec)
		r := one(t, poll(a, "usb"), "refused", unsigned)
		if !strings.Contains(r.Error, "no signature") || rec.count() != 0 {
			t.Errorf("error = %q, %d applies", r.Error, rec.count())
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.pub")
		if err := os.WriteFile(other, otherPublicKey(t), 0o600); err != nil {
			t.Fatal(err)
		}
		rec := newRecorder()
		a := e.bundleConfig("", good, fmt.Sprintf("    verify: {keys: [%s]}\n", other)).agent(t, e, rec)
		r := one(t, poll(a, "usb"), "refused", signed)
		if !strings.Contains(r.Error, "none verifies") && !strings.Contains(r.Error, "no signature verifies") {
			t.Errorf("error = %q", r.Error)
		}
		if rec.count() != 0 {
			t.Error("applied with the wrong key")
		}
	})
	t.Run("altered layer", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "site.tar")
		copyFile(t, good, file)
		_, m, err := e.clientFor().Manifest(context.Background(), oci.Reference{Registry: e.host, Repository: "fleet/app", Digest: signed})
		if err != nil {
			t.Fatal(err)
		}
		layer := m.Layers[0].Digest.String()
		testenv.AlterBundleBlob(t, file, layer)
		rec := newRecorder()
		a := e.bundleConfig("", file, "").agent(t, e, rec)
		r := one(t, poll(a, "usb"), "refused", signed)
		if !strings.Contains(r.Error, "digest mismatch") || !strings.Contains(r.Error, layer) {
			t.Errorf("error does not name the altered blob %s: %q", layer, r.Error)
		}
		if rec.count() != 0 || a.store.Has(signed) {
			t.Error("an altered bundle was applied or kept")
		}
	})
	t.Run("not a bundle", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "site.tar")
		if err := os.WriteFile(file, []byte("not a tar"), 0o600); err != nil {
			t.Fatal(err)
		}
		a := e.bundleConfig("", file, "").agent(t, e, newRecorder())
		r := one(t, poll(a, "usb"), "refused", "")
		if !strings.Contains(r.Error, "invalid bundle") {
			t.Errorf("error = %q", r.Error)
		}
	})
}

// clientFor returns the env's client (the registry may be closed: only
// for tests that still reach it).
func (e *env) clientFor() *oci.Client { return e.client }

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// touch moves the file's modification time forward, as a new copy would.
func touch(t *testing.T, file string) {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	next := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(file, next, next); err != nil {
		t.Fatal(err)
	}
}

// otherPublicKey is a P-256 public key (PEM) that signed nothing.
func otherPublicKey(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func parseConfig(path, text string) (*config.Config, error) { return config.Parse(path, []byte(text)) }

func TestBundleSourcePushTo(t *testing.T) {
	e, local := newEnv(t), newEnv(t)
	files, image := e.withImage("acme/hello")
	d1 := e.push("fleet/app", "stable", artifact{files: files, created: t0})
	file := e.makeBundle("fleet/app", "stable", "")
	e.srv.Close()

	global := fmt.Sprintf("bundles: {pushTo: %s/site, insecure: true}", local.host)
	a := e.bundleConfig(global, file, "").agent(t, e, newRecorder())
	one(t, poll(a, "usb"), "applied", d1)

	// The state, its signature and the image are in the local registry,
	// under the prefix, digests kept.
	ctx := context.Background()
	_, imageDigest, _ := strings.Cut(image, "@")
	for _, ref := range []oci.Reference{
		{Registry: local.host, Repository: "site/fleet/app", Digest: d1},
		{Registry: local.host, Repository: "site/fleet/app", Tag: "stable"},
		{Registry: local.host, Repository: "site/acme/hello", Digest: imageDigest},
	} {
		desc, err := local.client.Resolve(ctx, ref)
		if err != nil {
			t.Errorf("%s is not in the local registry: %v", ref, err)
			continue
		}
		if ref.Tag != "" && desc.Digest.String() != d1 {
			t.Errorf("%s = %s, want %s", ref, desc.Digest, d1)
		}
	}
	if err := e.verifyAt(local, "site/fleet/app", d1); err != nil {
		t.Errorf("the signature does not verify in the local registry: %v", err)
	}
}

// verifyAt verifies repo@d on registry m with the test key.
func (e *env) verifyAt(m *env, repo, d string) error {
	ctx := context.Background()
	keys, err := cosign.LoadPublicKeys(e.pub)
	if err != nil {
		return err
	}
	nd, err := m.client.Name(oci.Reference{Registry: m.host, Repository: repo, Digest: d})
	if err != nil {
		return err
	}
	_, err = cosign.Verify(ctx, nd, keys, m.client.RemoteOptions(ctx)...)
	return err
}
