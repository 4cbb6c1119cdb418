package readcap

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

func TestFile(t *testing.T) {
	fsys := fstest.MapFS{
		"small.yaml": {Data: []byte("abc")},
		"exact.yaml": {Data: []byte("abcd")},
		"big.yaml":   {Data: []byte("abcde")},
		"dir/x":      {Data: []byte("x")},
		"pipe":       {Mode: fs.ModeNamedPipe},
	}
	for _, tc := range []struct {
		name, want, wantErr string
	}{
		{"small.yaml", "abc", ""},
		{"exact.yaml", "abcd", ""},
		{"big.yaml", "", `"big.yaml" is larger than 4 bytes`},
		{"dir", "", `"dir" is not a regular file`},
		{"pipe", "", `"pipe" is not a regular file`},
		{"missing", "", "file does not exist"},
	} {
		got, err := File(fsys, tc.name, 4)
		if tc.wantErr == "" {
			if err != nil || string(got) != tc.want {
				t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) || got != nil {
			t.Errorf("%s: %q, %v; want the error %q", tc.name, got, err, tc.wantErr)
		}
	}
}
