package statement

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/policy/rollout"
)

// BenchmarkRead measures what a device pays to look for statements during
// a rollout, on Debian's docker-registry (no referrers API: the fallback
// tag), with TLS and basic auth: registry requests and time per Read, for
// a release with 0, 1 and 4 statements. Outside a rollout a device makes
// none of these requests.
//
//	go test -run '^$' -bench BenchmarkRead -benchtime 20x ./policy/rollout/statement/
func BenchmarkRead(b *testing.B) {
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	tg := target{host: reg.Host(), ropts: []remote.Option{
		remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}),
		remote.WithTransport(reg.HTTPClient().Transport),
	}}
	ctx := context.Background()
	k := newKey(b, "ci.pub")
	policy := cosign.Policy{Keys: []cosign.Key{k.pub}}
	for _, n := range []int{0, 1, 4} {
		d := tg.release(b)
		for i := range n {
			s := Statement{Action: rollout.Pause, Digest: d.DigestStr(), SignedAt: time.Now().Add(time.Duration(i) * time.Second)}
			if err := Sign(ctx, d, s, k.sv, tg.ropts...); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("statements=%d", n), func(b *testing.B) {
			before := reg.RequestCount("")
			for b.Loop() {
				r, err := Read(ctx, d, policy, Options{}, tg.ropts...)
				if err != nil || len(r.Valid) != n {
					b.Fatalf("Read = %+v, %v", r, err)
				}
			}
			// The access log is written just after each answer.
			time.Sleep(200 * time.Millisecond)
			b.ReportMetric(float64(reg.RequestCount("")-before)/float64(b.N), "requests/op")
		})
	}
}
