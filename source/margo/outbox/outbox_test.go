package outbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func keys(ms []Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Key+"="+string(m.Body))
	}
	return out
}

func TestQueueOrderAndRestart(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := q.Push("d1", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	q.Push("d2", []byte(`"x"`))
	// The receiver is down: nothing is removed, order kept.
	down := errors.New("connection refused")
	var got []string
	sent, _, err := q.Flush(context.Background(), func(_ context.Context, m Message) error {
		got = append(got, m.Key)
		return down
	})
	if !errors.Is(err, down) || sent != 0 || q.Len() != 4 || len(got) != 1 {
		t.Fatalf("flush while down: sent %d, err %v, len %d, tried %v", sent, err, q.Len(), got)
	}
	// A restart reads the same messages back, in order, and appends after them.
	q2, err := Open(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	q2.Push("d3", []byte(`true`))
	want := []string{"d1=0", "d1=1", "d1=2", `d2="x"`, "d3=true"}
	if k := keys(q2.Messages()); !reflect.DeepEqual(k, want) {
		t.Fatalf("after restart: %v, want %v", k, want)
	}
	var delivered []string
	sent, dropped, err := q2.Flush(context.Background(), func(_ context.Context, m Message) error {
		if m.Key == "d2" {
			return fmt.Errorf("422: %w", ErrDrop)
		}
		delivered = append(delivered, m.Key+"="+string(m.Body))
		return nil
	})
	if err != nil || sent != 4 || len(dropped) != 1 || q2.Len() != 0 {
		t.Fatalf("flush: sent %d, dropped %v, err %v, len %d", sent, dropped, err, q2.Len())
	}
	if want := []string{"d1=0", "d1=1", "d1=2", "d3=true"}; !reflect.DeepEqual(delivered, want) {
		t.Errorf("delivered %v, want %v", delivered, want)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 0 {
		t.Errorf("files left: %v", files)
	}
}

func TestQueueBound(t *testing.T) {
	q, err := Open(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	q.Push("a", []byte("1"))
	q.Push("b", []byte("1"))
	q.Push("a", []byte("2"))
	// Full: a=1 is superseded by a=2 and goes first.
	if n, err := q.Push("c", []byte("1")); n != 1 || err != nil {
		t.Fatalf("push: dropped %d, %v", n, err)
	}
	if k, want := keys(q.Messages()), []string{"b=1", "a=2", "c=1"}; !reflect.DeepEqual(k, want) {
		t.Fatalf("got %v, want %v", k, want)
	}
	// Nothing superseded: the oldest goes.
	q.Push("d", []byte("1"))
	if k, want := keys(q.Messages()), []string{"a=2", "c=1", "d=1"}; !reflect.DeepEqual(k, want) {
		t.Fatalf("got %v, want %v", k, want)
	}
	if _, err := q.Push("e", []byte("{")); err == nil {
		t.Error("invalid JSON queued")
	}
}

func TestQueueDamaged(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir, 10)
	q.Push("a", []byte("1"))
	q.Push("b", []byte("2"))
	os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.json", 1)), []byte("garbage"), 0o600)
	os.WriteFile(filepath.Join(dir, ".msg-123"), []byte("half"), 0o600)
	q2, err := Open(dir, 10)
	if err == nil || q2 == nil {
		t.Fatalf("Open = %v, %v; want the queue and an error", q2, err)
	}
	if k := keys(q2.Messages()); !reflect.DeepEqual(k, []string{"b=2"}) {
		t.Errorf("got %v", k)
	}
	if _, err := os.Stat(filepath.Join(dir, ".msg-123")); !os.IsNotExist(err) {
		t.Error("unfinished write left")
	}
}
