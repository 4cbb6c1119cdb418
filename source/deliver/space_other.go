//go:build !linux

package deliver

// diskSpace is not measured here: the pre-flight check is skipped.
func diskSpace(string) (total, avail uint64, ok bool) { return 0, 0, false }
