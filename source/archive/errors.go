package archive

import (
	"errors"
	"fmt"

	"github.com/berth-dev/berth/internal/errdef"
)

// Sentinel errors. Every error about an archive entry, a path of the folder
// being archived, a limit or a malformed stream wraps one of them, together
// with the name of the offending entry or path, so callers can test them with
// [errors.Is]. Errors of the file system, of the caller's reader and of the
// context are returned wrapped as they are.
var (
	// ErrUnsafePath reports an entry name that is absolute, has a ".."
	// component, names the target folder itself, or lies below an entry
	// that is not a directory (for instance below a symlink).
	ErrUnsafePath = errdef.Refusal("unsafe path: refused")

	// ErrLinkOutside reports a symlink whose target is absolute or resolves
	// outside the folder, lexically or through other symlinks.
	ErrLinkOutside = errdef.Refusal("symlink leaves the folder: refused")

	// ErrHardLink reports a hard link entry. Hard links are never extracted.
	ErrHardLink = errdef.Refusal("hard links are not supported: refused")

	// ErrSpecialFile reports a device, fifo, socket or any other entry that
	// is not a regular file, a directory or a symlink.
	ErrSpecialFile = errdef.Refusal("special file: refused")

	// ErrDuplicateEntry reports an archive entry whose path was already
	// created by an earlier entry.
	ErrDuplicateEntry = errdef.Refusal("duplicate entry: refused")

	// ErrTooLarge reports that a file, the total of the file contents or the
	// decompressed stream went past the configured [Limits].
	ErrTooLarge = errdef.Refusal("size limit exceeded")

	// ErrTooManyFiles reports that the archive has more entries than
	// [Limits.MaxFiles] allows.
	ErrTooManyFiles = errdef.Refusal("entry count limit exceeded")

	// ErrInvalidArchive reports a stream that is neither a valid tar nor a
	// valid tar+gzip stream (truncated, corrupt, empty or not an archive).
	ErrInvalidArchive = errdef.Refusal("not a valid tar or tar+gzip stream")

	// ErrTargetExists reports an extraction target that already exists
	// ([ExtractAtomic]) or is not an empty folder ([Extract]).
	ErrTargetExists = errors.New("target already exists")
)

// refuse returns an error about the archive entry name wrapping the sentinel
// kind, for instance:
//
//	archive entry "../etc/passwd": path has a ".." component: unsafe path: refused
func refuse(name, detail string, kind error) error {
	return fmt.Errorf("archive entry %q: %s: %w", name, detail, kind)
}

// refusePath is like refuse for a path of the folder being archived.
func refusePath(name, detail string, kind error) error {
	return fmt.Errorf("path %q: %s: %w", name, detail, kind)
}
