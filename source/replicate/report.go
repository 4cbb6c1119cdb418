package replicate

import (
	"errors"
	"time"
)

// Statuses of an Item.
const (
	// StatusCopied: something was written to the target for this tag (its
	// content, signatures, or the tag itself).
	StatusCopied = "copied"
	// StatusUpToDate: the target tag already pointed at the upstream
	// digest, with every signature present; nothing was written.
	StatusUpToDate = "up-to-date"
	// StatusFailed: the tag could not be synced to the target; Error says
	// why.
	StatusFailed = "failed"
)

// Report is what one pass did.
type Report struct {
	// Started is when the pass started.
	Started time.Time `json:"started"`
	// Seconds is how long it took.
	Seconds float64 `json:"seconds"`
	// Copied, UpToDate and Failed count the items of every job.
	Copied   int `json:"copied"`
	UpToDate int `json:"upToDate"`
	Failed   int `json:"failed"`
	// Bytes is what was copied, blobs and manifests.
	Bytes int64 `json:"bytes"`
	// Jobs are the jobs that ran, in file order.
	Jobs []JobReport `json:"jobs"`

	errs []error
}

// JobReport is what one pass did for one job.
type JobReport struct {
	// Name is the job's name.
	Name string `json:"name"`
	// Listed is how many tags the upstream repositories have, signature
	// tags left out; 0 for a job with explicit tags (nothing is listed).
	Listed int `json:"listed"`
	// Selected is how many tags the job selected, over its repositories.
	Selected int `json:"selected"`
	// Copied, UpToDate and Failed count the items: one selected tag to
	// one target each.
	Copied   int `json:"copied"`
	UpToDate int `json:"upToDate"`
	Failed   int `json:"failed"`
	// Bytes is what was copied for the job.
	Bytes int64 `json:"bytes"`
	// Errors are the job's upstream repositories that could not be read
	// (their targets were left untouched).
	Errors []string `json:"errors,omitempty"`
	// Warnings say why a selection is empty.
	Warnings []string `json:"warnings,omitempty"`
	// Items are the tags synced to each target.
	Items []Item `json:"items"`
}

// Item is one tag synced from the upstream to one target.
type Item struct {
	// Source is the upstream host/path:tag.
	Source string `json:"source"`
	// Target is the target host/path:tag.
	Target string `json:"target"`
	// Digest is the digest the tag points at upstream (and now at the
	// target); empty when the tag could not be resolved.
	Digest string `json:"digest,omitempty"`
	// Status is StatusCopied, StatusUpToDate or StatusFailed.
	Status string `json:"status"`
	// Bytes is what was copied for the digest to this target; counted on
	// the first of several tags that point at one digest.
	Bytes int64 `json:"bytes,omitempty"`
	// Error says why the item failed.
	Error string `json:"error,omitempty"`

	err error // what Error says, with its sentinel
}

// OK reports whether every job's upstream could be read and every item
// was synced.
func (r *Report) OK() bool { return len(r.errs) == 0 }

// Err joins the errors of the pass (one per failed item or unreadable
// upstream repository), each wrapping ErrUpstream, ErrTagNotFound or
// ErrCopy; nil when OK.
func (r *Report) Err() error { return errors.Join(r.errs...) }
