//go:build linux && (amd64 || arm64)

package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The power-cut tests extract onto a real ext4 file system on a loop
// device and cut it the way a power failure does: the EXT4_IOC_SHUTDOWN
// ioctl with EXT4_GOING_FLAGS_NOLOGFLUSH stops the file system at once,
// dropping every dirty page and every journal transaction not yet
// committed (xfstests' "godown"). After a remount, what is there is what a
// power cut would have left. The file system is mounted with commit=600 so
// that nothing reaches the disk unless the code flushes it.

const (
	ext4IocShutdown          = 0x8004587d // _IOR('X', 125, __u32)
	ext4GoingFlagsNoLogFlush = 0x2
)

// ext4Disk is an ext4 file system in an image file, mounted on a loop
// device.
type ext4Disk struct {
	img, mnt string
}

// newExt4Disk makes and mounts a 512 MiB ext4 image, unmounted at the end
// of the test. It needs root, mkfs.ext4 (e2fsprogs) and loop devices.
func newExt4Disk(t *testing.T) *ext4Disk {
	t.Helper()
	if testing.Short() {
		t.Skip("power-cut tests mount a loop device: not with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("power-cut tests mount an ext4 image on a loop device: run them as root (or skip them with -short)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Fatal("power-cut tests need mkfs.ext4: apt-get install e2fsprogs (or skip them with -short)")
	}
	dir := t.TempDir()
	d := &ext4Disk{img: filepath.Join(dir, "disk.img"), mnt: filepath.Join(dir, "mnt")}
	if err := os.Mkdir(d.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "truncate", "-s", "512M", d.img)
	run(t, "mkfs.ext4", "-q", "-F", d.img)
	d.mount(t)
	t.Cleanup(func() { exec.Command("umount", d.mnt).Run() })
	return d
}

func (d *ext4Disk) mount(t *testing.T) {
	t.Helper()
	run(t, "mount", "-o", "loop,commit=600", d.img, d.mnt)
}

// cut stops the file system as a power failure would.
func (d *ext4Disk) cut(t *testing.T) {
	t.Helper()
	fd, err := unix.Open(d.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags := uint32(ext4GoingFlagsNoLogFlush)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ext4IocShutdown, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		t.Fatalf("EXT4_IOC_SHUTDOWN: %v", errno)
	}
}

// restart unmounts the cut file system and mounts it again: journal
// replay, as at the next boot.
func (d *ext4Disk) restart(t *testing.T) {
	t.Helper()
	run(t, "umount", d.mnt)
	d.mount(t)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// powerCutTree is an archive with the shapes a revision has: many small
// files in folders, a few large ones, executables and symlinks.
func powerCutTree(t *testing.T) ([]byte, map[string]string) {
	rng := rand.New(rand.NewPCG(1, 2))
	var entries []tEntry
	for i := range 400 {
		body := make([]byte, 1+rng.IntN(40<<10))
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		e := file(fmt.Sprintf("apps/a%02d/f%03d", i%20, i), string(body))
		if i%50 == 0 {
			e.mode = 0o755
		}
		entries = append(entries, e)
	}
	for i := range 3 {
		entries = append(entries, file(fmt.Sprintf("big/%d.bin", i), strings.Repeat(fmt.Sprintf("%07d\n", i), 1<<20/8)))
	}
	entries = append(entries, symlink("apps/current", "a01"), file("berth.yaml", "apiVersion: berth.dev/v1\n"))
	return makeTar(t, true, entries...), describeEntries(entries)
}

// describeEntries is what a complete extraction of entries holds, in the
// form treeOf returns.
func describeEntries(entries []tEntry) map[string]string {
	want := map[string]string{}
	for _, e := range entries {
		switch e.typ {
		case tar.TypeSymlink:
			want[e.name] = "link " + e.link
		case tar.TypeReg:
			mode := 0o644
			if e.mode&0o111 != 0 {
				mode = 0o755
			}
			want[e.name] = fmt.Sprintf("file %o %x", mode, sha256.Sum256([]byte(e.body)))
		}
	}
	return want
}

// treeOf describes the files and symlinks below dir.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			got[rel] = "link " + target
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		got[rel] = fmt.Sprintf("file %o %x", fi.Mode().Perm(), sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// diffTrees says how got differs from want, or "".
func diffTrees(want, got map[string]string) string {
	missing, wrong, extra := 0, 0, 0
	example := ""
	for k := range got {
		if _, ok := want[k]; !ok {
			extra++
			example = k + " unexpected"
		}
	}
	for k, v := range want {
		switch g, ok := got[k]; {
		case !ok:
			missing++
			example = k + " missing"
		case g != v:
			wrong++
			example = k + ": " + g + ", want " + v
		}
	}
	if missing+wrong+extra == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d entries missing, %d different, %d unexpected (e.g. %s)", missing, len(want), wrong, extra, example)
}

// TestExtractAtomicPowerCut cuts the power right after ExtractAtomic
// returns: the revision must be there, complete, with either flush (syncfs
// and the per-entry fallback) and with or without writer goroutines. The
// control run, without the flush, must lose it, or the test proves nothing.
func TestExtractAtomicPowerCut(t *testing.T) {
	data, want := powerCutTree(t)
	noFlush := func(*os.Root, iter.Seq[string]) error { return nil }
	for _, tt := range []struct {
		name     string
		flush    func(*os.Root, iter.Seq[string]) error
		workers  int
		complete bool
	}{
		{"syncfs", flushFS, 4, true},
		{"syncfs inline", flushFS, 0, true},
		{"fsync each", fsyncEach, 4, true},
		{"control without flush", noFlush, 4, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer setExtractHooks(t, tt.flush, tt.workers)()
			d := newExt4Disk(t)
			target := filepath.Join(d.mnt, "revisions", "sha256-x")
			if _, err := ExtractAtomic(context.Background(), bytes.NewReader(data), target, Limits{}); err != nil {
				t.Fatal(err)
			}
			if diff := diffTrees(want, treeOf(t, target)); diff != "" {
				t.Fatalf("before the cut: %s", diff)
			}
			d.cut(t)
			d.restart(t)
			got := map[string]string{}
			if _, err := os.Lstat(target); err == nil {
				got = treeOf(t, target)
			}
			diff := diffTrees(want, got)
			switch {
			case tt.complete && diff != "":
				t.Errorf("after the power cut: %s", diff)
			case !tt.complete && diff == "":
				t.Errorf("control: the extraction survived the power cut without a flush; the test cannot tell a flush from none")
			case !tt.complete:
				t.Logf("control, as expected: %s", diff)
			}
			leftovers, _ := filepath.Glob(filepath.Join(d.mnt, "revisions", "*.tmp-*"))
			t.Logf("temporary folders left for the store to clean: %d", len(leftovers))
		})
	}
}

// TestExtractAtomicPowerCutDuring cuts the power at seeded random instants
// while ExtractAtomic runs: after the restart the revision is either
// absent or complete, never partial, and complete whenever ExtractAtomic
// had returned before the cut.
func TestExtractAtomicPowerCutDuring(t *testing.T) {
	data, want := powerCutTree(t)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	// How long an extraction takes here bounds the instants.
	d := newExt4Disk(t)
	start := time.Now()
	if _, err := ExtractAtomic(context.Background(), bytes.NewReader(data), filepath.Join(d.mnt, "probe"), Limits{}); err != nil {
		t.Fatal(err)
	}
	span := time.Since(start) * 5 / 4
	t.Logf("one extraction takes %s", span)

	var absent, complete int
	for i := range 8 {
		d := newExt4Disk(t)
		target := filepath.Join(d.mnt, "revisions", "sha256-x")
		at := time.Duration(rng.Int64N(int64(span)))
		done := make(chan error, 1)
		var returned time.Time
		go func() {
			_, err := ExtractAtomic(context.Background(), bytes.NewReader(data), target, Limits{})
			returned = time.Now()
			done <- err
		}()
		time.Sleep(at)
		cutAt := time.Now()
		d.cut(t)
		err := <-done
		returnedBefore := err == nil && returned.Before(cutAt)
		d.restart(t)
		_, lerr := os.Lstat(target)
		switch {
		case errors.Is(lerr, fs.ErrNotExist):
			absent++
			if returnedBefore {
				t.Errorf("cut %d at %s: ExtractAtomic had returned, but the revision is gone", i, at)
			}
		case lerr != nil:
			t.Fatal(lerr)
		default:
			complete++
			if diff := diffTrees(want, treeOf(t, target)); diff != "" {
				t.Errorf("cut %d at %s: partial revision: %s (ExtractAtomic: %v)", i, at, diff, err)
			}
		}
	}
	t.Logf("8 cuts: %d left no revision, %d a complete one", absent, complete)
}

// setExtractHooks sets the flush and the number of writers, and returns
// the function that restores them.
func setExtractHooks(t *testing.T, flush func(*os.Root, iter.Seq[string]) error, workers int) func() {
	t.Helper()
	oldFlush, oldWorkers := flushTree, writeWorkers
	flushTree, writeWorkers = flush, workers
	return func() { flushTree, writeWorkers = oldFlush, oldWorkers }
}
