package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FuzzOpenPartial feeds openPartial any partial blob and any state file
// (both survive restarts in stateDir, so a crash, a full disk or a hand
// edit can leave anything there). A download may resume only after bytes
// whose SHA-256 state is exactly the saved one; anything else starts over
// with the partial blob cut to nothing. It never panics.
func FuzzOpenPartial(f *testing.F) {
	blob := []byte("the blob that a registry serves, in full")
	desc := ocispec.Descriptor{Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	h := sha256.New()
	h.Write(blob[:10])
	good, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
	st, _ := json.Marshal(partialState{Digest: desc.Digest.String(), Size: desc.Size, Offset: 10, SHA256: good})
	f.Add(blob[:10], st)
	f.Add(blob[:20], st)
	f.Add([]byte("other bytes"), st)
	f.Add(blob[:5], st)
	f.Add([]byte{}, []byte(`{"offset":-1}`))
	f.Add(blob, []byte(`{"digest":"`+desc.Digest.String()+`","size":40,"offset":40,"sha256":"AAAA"}`))
	f.Fuzz(func(t *testing.T, part, state []byte) {
		dir := t.TempDir()
		base := filepath.Join(dir, "sha256-"+desc.Digest.Encoded())
		if err := os.WriteFile(base+partSuffix, part, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(base+stateSuffix, state, 0o600); err != nil {
			t.Fatal(err)
		}
		p := openPartial(dir, desc)
		if p == nil {
			t.Fatal("openPartial gave up on a usable folder")
		}
		defer p.close()
		fi, err := p.f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != p.offset {
			t.Fatalf("the partial blob holds %d bytes, resumes after %d", fi.Size(), p.offset)
		}
		if p.offset == 0 {
			return
		}
		if p.offset < 0 || p.offset > desc.Size || p.offset > int64(len(part)) {
			t.Fatalf("resumes after %d bytes of a %d-byte blob, %d bytes kept", p.offset, desc.Size, len(part))
		}
		// The kept bytes hash to the saved state, and the hash the
		// download goes on with is that state.
		want := sha256.New()
		want.Write(part[:p.offset])
		wantState, _ := want.(encoding.BinaryMarshaler).MarshalBinary()
		var saved partialState
		if err := json.NewDecoder(bytes.NewReader(state)).Decode(&saved); err != nil {
			t.Fatalf("resumed from a state file that does not parse: %v", err)
		}
		if !bytes.Equal(saved.SHA256, wantState) {
			t.Fatal("resumed after bytes whose hash is not the saved one")
		}
		got, _ := p.hash.(encoding.BinaryMarshaler).MarshalBinary()
		if !bytes.Equal(got, wantState) {
			t.Fatal("the download goes on from a hash state other than the kept bytes'")
		}
	})
}
