// Package archive builds reproducible tar+gzip archives of a folder and
// extracts untrusted ones safely.
//
// [Build] packs a folder into the single tar+gzip layer of a
// Flux-compatible OCI artifact (media type
// application/vnd.cncf.flux.content.v1.tar+gzip). The output depends only on
// the relative paths, contents, symlink targets and executable bits of the
// archived files, never on the host, the owner, the umask, timestamps or the
// absolute location of the folder:
//
//   - entries are sorted by their tar name (slash-separated, relative, no
//     leading "./", directories with a trailing "/"), directories included;
//   - headers use the PAX format, uid/gid 0, empty user and group names, a
//     modification time of 1970-01-01T00:00:00Z (Unix time 0) and no access
//     or change times;
//   - modes are normalised: directories 0755, regular files 0644, or 0755
//     when any execute bit is set in the source, symlinks 0777;
//   - the gzip header has no name, a zero modification time and the
//     "unknown" OS byte, and the compression level is always
//     [compress/gzip.BestCompression].
//
// The archive bytes are identical for the same folder content when built
// with the same Go toolchain. The uncompressed tar bytes do not depend on the
// toolchain in practice, but compress/flate's output may in principle change
// between Go releases, which would change the digest.
//
// [Extract] and [ExtractAtomic] unpack an untrusted tar or tar+gzip stream
// through an [os.Root], after refusing every entry that could write outside
// the target folder or create anything but regular files, directories and
// symlinks that stay inside the folder, within [Limits]. [Diff] compares a
// folder with an archive without writing anything.
package archive
