// Package outbox is a bounded, ordered queue of messages on disk that
// survives a dead receiver and a restart: berth keeps the Margo status
// posts there while the WFM cannot be reached, and sends them in order once
// it can.
//
// Each message is one file, <sequence>.json, written atomically (a synced
// temporary file renamed into place, the folder synced), so a crash leaves
// every message whole or absent. Flush sends them oldest first and removes
// each once sent; it stops at the first failure that is worth retrying, so
// order is kept. A message the receiver refuses for good (the sender
// returns an error wrapping ErrDrop) is removed and logged by the caller.
//
// The queue holds at most Max messages. When it is full, Push first drops
// the oldest message whose key has a newer message in the queue (a status
// the receiver would overwrite anyway), else the oldest message.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// DefaultMax is the bound of a queue opened with max <= 0.
const DefaultMax = 1000

// maxMessage caps a message read back.
const maxMessage = 1 << 20

// ErrDrop, wrapped by a send error, removes the message instead of keeping
// it for a retry.
var ErrDrop = errors.New("message refused for good")

// Message is one queued message.
type Message struct {
	// Key groups messages that supersede one another (a deployment id).
	Key string `json:"key"`
	// Body is the message.
	Body json.RawMessage `json:"body"`
	seq  uint64
}

// Queue is an outbox in one folder. It is safe for concurrent use by one
// process.
type Queue struct {
	dir string
	max int

	mu   sync.Mutex
	msgs []Message // in order, bodies loaded
	next uint64
}

// Open opens (creating it) the queue in dir and reads the messages it
// holds. A damaged file (which atomic writes do not leave; a disk fault
// might) is removed and reported in the returned error, which is then
// joined with a usable queue.
func Open(dir string, bound int) (*Queue, error) {
	if bound <= 0 {
		bound = DefaultMax
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("status queue %s: %w", dir, err)
	}
	q := &Queue{dir: dir, max: bound, next: 1}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("status queue %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			os.Remove(filepath.Join(dir, name)) // an unfinished write
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, ".json"), 10, 64)
		if err != nil || !strings.HasSuffix(name, ".json") {
			continue
		}
		m, err := readMessage(filepath.Join(dir, name))
		if err != nil {
			errs = append(errs, err)
			os.Remove(filepath.Join(dir, name))
			continue
		}
		m.seq = seq
		q.msgs = append(q.msgs, m)
		q.next = max(q.next, seq+1)
	}
	slices.SortFunc(q.msgs, func(a, b Message) int { return cmpU(a.seq, b.seq) })
	if len(errs) > 0 {
		return q, fmt.Errorf("status queue %s: removed damaged messages: %w", dir, errors.Join(errs...))
	}
	return q, nil
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func readMessage(path string) (Message, error) {
	f, err := os.Open(path)
	if err != nil {
		return Message{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxMessage+1))
	if err != nil {
		return Message{}, err
	}
	var m Message
	if len(data) > maxMessage || json.Unmarshal(data, &m) != nil || len(m.Body) == 0 {
		return Message{}, fmt.Errorf("%s is not a queued message", path)
	}
	return m, nil
}

func (q *Queue) path(seq uint64) string {
	return filepath.Join(q.dir, fmt.Sprintf("%020d.json", seq))
}

// Len returns the number of queued messages.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs)
}

// Messages returns a copy of the queued messages, oldest first.
func (q *Queue) Messages() []Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.msgs)
}

// Push appends a message durably. It returns the number of older messages
// dropped to stay within the bound.
func (q *Queue) Push(key string, body []byte) (dropped int, err error) {
	if !json.Valid(body) {
		return 0, errors.New("outbox: body is not JSON")
	}
	m := Message{Key: key, Body: json.RawMessage(body)}
	data, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	if len(data) > maxMessage {
		return 0, fmt.Errorf("outbox: message of %d bytes is over the %d byte cap", len(data), maxMessage)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.msgs) >= q.max {
		i := q.victim()
		if err := os.Remove(q.path(q.msgs[i].seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return dropped, err
		}
		q.msgs = slices.Delete(q.msgs, i, i+1)
		dropped++
	}
	m.seq = q.next
	if err := writeFile(q.dir, q.path(m.seq), data); err != nil {
		return dropped, fmt.Errorf("queue status: %w", err)
	}
	q.next++
	q.msgs = append(q.msgs, m)
	return dropped, nil
}

// victim is the index to drop: the oldest message superseded by a newer
// one of the same key, else the oldest.
func (q *Queue) victim() int {
	last := map[string]int{}
	for i, m := range q.msgs {
		last[m.Key] = i
	}
	for i, m := range q.msgs {
		if last[m.Key] != i {
			return i
		}
	}
	return 0
}

// Flush sends the queued messages in order with send, removing each once
// sent (or refused for good: ErrDrop). It stops at the first other error,
// which it returns with the number sent; ctx ends it too.
func (q *Queue) Flush(ctx context.Context, send func(ctx context.Context, m Message) error) (sent int, dropped []error, err error) {
	for {
		if err := ctx.Err(); err != nil {
			return sent, dropped, err
		}
		q.mu.Lock()
		if len(q.msgs) == 0 {
			q.mu.Unlock()
			return sent, dropped, nil
		}
		m := q.msgs[0]
		q.mu.Unlock()
		serr := send(ctx, m)
		if serr != nil && !errors.Is(serr, ErrDrop) {
			return sent, dropped, serr
		}
		if serr != nil {
			dropped = append(dropped, serr)
		} else {
			sent++
		}
		q.mu.Lock()
		if len(q.msgs) > 0 && q.msgs[0].seq == m.seq {
			if err := os.Remove(q.path(m.seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
				q.mu.Unlock()
				return sent, dropped, err
			}
			q.msgs = q.msgs[1:]
		}
		q.mu.Unlock()
	}
}

func writeFile(dir, path string, data []byte) error {
	tmp, err := os.CreateTemp(dir, ".msg-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
