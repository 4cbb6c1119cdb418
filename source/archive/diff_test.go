package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestDiff(t *testing.T) {
	base := []spec{
		{name: "berth.yaml", body: "image: app:1\n"},
		{name: "run.sh", body: "#!/bin/sh\n", exec: true},
		{name: "conf/a.conf", body: "a"},
		{name: "conf/b.conf", body: "b"},
		{name: "current", link: "conf/a.conf"},
		{name: "notes.log", body: "ignored"},
		{name: ".berthignore", body: "*.log\n"},
	}
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		opts   BuildOptions
		want   Changes
	}{
		{name: "unchanged", change: func(*testing.T, string) {}},
		{name: "metadata only", change: func(t *testing.T, dir string) {
			must(t, os.Chmod(filepath.Join(dir, "berth.yaml"), 0o600))
			must(t, os.Chmod(filepath.Join(dir, "run.sh"), 0o700))
		}},
		{name: "empty folder and ignored file", change: func(t *testing.T, dir string) {
			must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o755))
			must(t, os.WriteFile(filepath.Join(dir, "new.log"), []byte("x"), 0o644))
			must(t, os.MkdirAll(filepath.Join(dir, ".git", "x"), 0o755))
		}},
		{name: "added removed modified", change: func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "conf", "c.conf"), []byte("c"), 0o644))
			must(t, os.Remove(filepath.Join(dir, "conf", "b.conf")))
			must(t, os.WriteFile(filepath.Join(dir, "berth.yaml"), []byte("image: app:2\n"), 0o644))
		}, want: Changes{Added: []string{"conf/c.conf"}, Removed: []string{"conf/b.conf"}, Modified: []string{"berth.yaml"}}},
		{name: "mode", change: func(t *testing.T, dir string) {
			must(t, os.Chmod(filepath.Join(dir, "run.sh"), 0o644))
			must(t, os.Chmod(filepath.Join(dir, "conf", "a.conf"), 0o744))
		}, want: Changes{Modified: []string{"conf/a.conf", "run.sh"}}},
		{name: "symlink target", change: func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "current")))
			must(t, os.Symlink("conf/b.conf", filepath.Join(dir, "current")))
		}, want: Changes{Modified: []string{"current"}}},
		{name: "file becomes symlink", change: func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "conf", "b.conf")))
			must(t, os.Symlink("a.conf", filepath.Join(dir, "conf", "b.conf")))
		}, want: Changes{Modified: []string{"conf/b.conf"}}},
		{name: "folder removed", change: func(t *testing.T, dir string) {
			must(t, os.RemoveAll(filepath.Join(dir, "conf")))
			must(t, os.WriteFile(filepath.Join(dir, "conf"), []byte("now a file"), 0o644))
		}, want: Changes{Added: []string{"conf"}, Removed: []string{"conf/a.conf", "conf/b.conf"}}},
		{name: "overlay", change: func(*testing.T, string) {},
			opts: BuildOptions{Overlay: map[string][]byte{"berth.yaml": []byte("image: app@sha256:aa\n"), "lock.json": []byte("{}")}},
			want: Changes{Added: []string{"lock.json"}, Modified: []string{"berth.yaml"}}},
		{name: "ignore option", change: func(*testing.T, string) {},
			opts: BuildOptions{Ignore: []string{"conf/"}},
			want: Changes{Removed: []string{"conf/a.conf", "conf/b.conf"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			makeTree(t, dir, base, permsStd)
			data, _ := build(t, dir, BuildOptions{})
			tt.change(t, dir)
			got, err := Diff(context.Background(), dir, bytes.NewReader(data), DiffOptions{Build: tt.opts})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Added, tt.want.Added) || !slices.Equal(got.Removed, tt.want.Removed) ||
				!slices.Equal(got.Modified, tt.want.Modified) {
				t.Errorf("Diff = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDiffErrors(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir, []spec{{name: "a", body: "a"}}, permsStd)
	if _, err := Diff(context.Background(), filepath.Join(dir, "missing"), bytes.NewReader(makeTar(t, true, file("a", "a"))), DiffOptions{}); err == nil {
		t.Error("Diff of a missing folder succeeded")
	}
	data := makeTar(t, true, file("a", "0123456789"))
	if _, err := Diff(context.Background(), dir, bytes.NewReader(data), DiffOptions{Limits: Limits{MaxSize: 5}}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("err = %v, want ErrTooLarge", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Diff(ctx, dir, bytes.NewReader(data), DiffOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
