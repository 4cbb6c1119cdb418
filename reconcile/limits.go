package reconcile

import (
	"errors"
	"time"

	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/archive"
	"github.com/berth-dev/berth/source/deliver"
	"github.com/berth-dev/berth/source/oci"
)

// What the agent does to make downloads survive bad links and restarts,
// and to bound what a registry can make it do (issue 11):
//
//   - a layer download cut off by a reset or a truncated body resumes
//     with a Range request (downloadResumes times in a row per pull), and
//     what it received is kept in the store's partial folder with its
//     SHA-256 state, so that the next reconcile, after a timeout or a
//     restart, resumes it from any endpoint (oci.BlobOptions);
//   - downloads are capped by maxBandwidth, and not started when they
//     would leave less than minFreeSpace on the state folder's disk;
//   - tag listings, referrers indexes and the signatures checked are
//     capped (limits: in agent.yaml); a cap met is an error that says
//     which field raises it.

// downloadResumes is how many times in a row a layer download is resumed
// within one pull.
const downloadResumes = 3

// maxPartialAge is how long a partial download is kept without being
// resumed.
const maxPartialAge = 7 * 24 * time.Hour

// newLimiter returns a limiter of bps bytes per second; nil for 0.
func newLimiter(bps int64) *rate.Limiter {
	if bps <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bps), int(min(bps, 256<<10)))
}

// downloadOptions sets the resume, partial folder, rate and free-space
// options of a pull of s. A bundle source reads a local file: nothing to
// resume or to cap.
func (a *Agent) downloadOptions(s *source, o *origin, fo *deliver.ExtractOptions) {
	fo.MinFree = deliver.MinFree{Bytes: a.cfg.MinFreeSpace.Bytes, Percent: a.cfg.MinFreeSpace.Percent}
	if o.bundle != nil || s.file != "" {
		return
	}
	fo.Resumes = downloadResumes
	fo.PartialDir = a.store.PartialDir()
	fo.Limiter = s.limiter
}

// capHint tells which setting of agent.yaml raises the cap err met, if
// any.
func capHint(err error) string {
	for _, c := range []struct {
		err  error
		hint string
	}{
		{oci.ErrTooManyTags, " (raise limits.maxTags or limits.maxTagPages of the source in agent.yaml if the repository really has that many)"},
		{cosign.ErrTooManySignatures, " (raise limits.maxSignatures of the source in agent.yaml if the digest really has that many signatures)"},
		{oci.ErrTooLarge, " (manifests and indexes are read up to 4 MiB, which registries do not exceed: this one misbehaves)"},
		{cosign.ErrTooManyReferrers, " (raise limits.maxReferrers of the source in agent.yaml if the digest really has that many referrers)"},
		{archive.ErrTooManyFiles, " (raise limits.maxFiles of the source in agent.yaml if the artifact really has that many files)"},
		{archive.ErrTooLarge, " (raise limits.maxSize of the source in agent.yaml if the artifact really is that large)"},
	} {
		if errors.Is(err, c.err) {
			return c.hint
		}
	}
	return ""
}
