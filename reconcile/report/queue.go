package report

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/berth-dev/berth/reconcile/metrics"
)

// The queue keeps one file per gather in its folder, named
//
//	<timestamp ms, 16 digits>-<sequence, 10 digits>-<samples>.rec
//
// so that the names sort oldest first and the queue's size, age and sample
// count are known without reading the files. A file holds the magic
// "BRQ1", the CRC-32C of the rest, and the snappy-compressed protobuf
// prompb.WriteRequest of the gather. Files are written under a temporary
// name, synced and renamed: a crash leaves a whole record or none (a
// leftover temporary file is removed when the queue is opened again).

const (
	recordMagic  = "BRQ1"
	recordSuffix = ".rec"
	tmpPrefix    = ".tmp-"
	// maxRecordFile caps what is read of one record file.
	maxRecordFile = 32 << 20
	// maxRecordDecoded caps a record's decompressed size.
	maxRecordDecoded = 128 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// record is one queued gather.
type record struct {
	name    string
	ts      int64 // milliseconds
	seq     uint64
	samples int
	size    int64
}

// queue is the on-disk FIFO of gathers not yet sent. It is used by one
// goroutine at a time.
type queue struct {
	dir     string
	maxAge  time.Duration
	maxSize int64

	recs    []record // oldest first
	size    int64
	samples int
	seq     uint64
}

// drop says what was dropped from the queue and why.
type drop struct {
	reason   string
	records  int
	samples  int
	from, to int64 // the oldest and newest timestamps dropped, ms
}

// openQueue opens (creating it) the queue folder and indexes its records.
// Files that are not records are left alone; leftover temporary files are
// removed.
func openQueue(dir string, maxAge time.Duration, maxSize int64) (*queue, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("report queue %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("report queue %s: %w", dir, err)
	}
	q := &queue{dir: dir, maxAge: maxAge, maxSize: maxSize}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		r, ok := parseRecordName(name)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		r.size = fi.Size()
		q.recs = append(q.recs, r)
		q.size += r.size
		q.samples += r.samples
		q.seq = max(q.seq, r.seq+1)
	}
	slices.SortFunc(q.recs, func(a, b record) int {
		if a.ts != b.ts {
			return cmpInt(a.ts, b.ts)
		}
		return cmpInt(a.seq, b.seq)
	})
	return q, nil
}

func cmpInt[T int64 | uint64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func parseRecordName(name string) (record, bool) {
	base, ok := strings.CutSuffix(name, recordSuffix)
	if !ok {
		return record{}, false
	}
	parts := strings.Split(base, "-")
	if len(parts) != 3 {
		return record{}, false
	}
	ts, err1 := strconv.ParseInt(parts[0], 10, 64)
	seq, err2 := strconv.ParseUint(parts[1], 10, 64)
	n, err3 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || n < 0 {
		return record{}, false
	}
	return record{name: name, ts: ts, seq: seq, samples: n}, true
}

// len is the number of records queued.
func (q *queue) len() int { return len(q.recs) }

// add writes req, gathered at ts (ms) with samples samples, as the newest
// record.
func (q *queue) add(req *prompb.WriteRequest, ts int64, samples int) error {
	raw, err := req.Marshal()
	if err != nil {
		return fmt.Errorf("encode report record: %w", err)
	}
	body := snappy.Encode(nil, raw)
	var hdr [8]byte
	copy(hdr[:4], recordMagic)
	binary.BigEndian.PutUint32(hdr[4:], crc32.Checksum(body, castagnoli))

	r := record{ts: ts, seq: q.seq, samples: samples, size: int64(len(hdr) + len(body))}
	r.name = fmt.Sprintf("%016d-%010d-%d%s", max(ts, 0), r.seq, samples, recordSuffix)
	tmp, err := os.CreateTemp(q.dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("report queue: %w", err)
	}
	_, err = tmp.Write(hdr[:])
	if err == nil {
		_, err = tmp.Write(body)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(q.dir, r.name))
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("report queue %s: %w", q.dir, err)
	}
	q.seq++
	q.recs = append(q.recs, r)
	q.size += r.size
	q.samples += r.samples
	return nil
}

// read returns the request recorded in r; an error wrapping errCorrupt when
// the file is damaged.
func (q *queue) read(r record) (*prompb.WriteRequest, error) {
	f, err := os.Open(filepath.Join(q.dir, r.name))
	if err != nil {
		return nil, fmt.Errorf("report queue: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecordFile+1))
	if err != nil {
		return nil, fmt.Errorf("report queue: %w", err)
	}
	switch {
	case len(data) > maxRecordFile:
		return nil, fmt.Errorf("%w %s: larger than %d bytes", errCorrupt, r.name, maxRecordFile)
	case len(data) < 8 || !bytes.Equal(data[:4], []byte(recordMagic)):
		return nil, fmt.Errorf("%w %s: no record header", errCorrupt, r.name)
	case binary.BigEndian.Uint32(data[4:8]) != crc32.Checksum(data[8:], castagnoli):
		return nil, fmt.Errorf("%w %s: checksum mismatch", errCorrupt, r.name)
	}
	n, err := snappy.DecodedLen(data[8:])
	if err != nil || n > maxRecordDecoded {
		return nil, fmt.Errorf("%w %s: bad compressed length", errCorrupt, r.name)
	}
	raw, err := snappy.Decode(nil, data[8:])
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", errCorrupt, r.name, err)
	}
	req := &prompb.WriteRequest{}
	if err := req.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("%w %s: %v", errCorrupt, r.name, err)
	}
	return req, nil
}

// remove deletes the oldest n records (sent, or dropped).
func (q *queue) remove(n int) {
	for _, r := range q.recs[:n] {
		_ = os.Remove(filepath.Join(q.dir, r.name))
		q.size -= r.size
		q.samples -= r.samples
	}
	q.recs = slices.Delete(q.recs, 0, n)
}

// removeAt deletes the record at index i.
func (q *queue) removeAt(i int) {
	r := q.recs[i]
	_ = os.Remove(filepath.Join(q.dir, r.name))
	q.size -= r.size
	q.samples -= r.samples
	q.recs = slices.Delete(q.recs, i, i+1)
}

// trim drops, oldest first, the records older than maxAge at now and then
// those that keep the queue over maxSize, and says what it dropped.
func (q *queue) trim(now time.Time) []drop {
	var out []drop
	cutoff := now.Add(-q.maxAge).UnixMilli()
	n := 0
	for n < len(q.recs) && q.recs[n].ts < cutoff {
		n++
	}
	if d := q.dropOldest(n, metrics.DropMaxAge); d != nil {
		out = append(out, *d)
	}
	size := q.size
	n = 0
	for n < len(q.recs) && size > q.maxSize {
		size -= q.recs[n].size
		n++
	}
	if d := q.dropOldest(n, metrics.DropMaxSize); d != nil {
		out = append(out, *d)
	}
	return out
}

// dropOldest removes the oldest n records and describes them; nil for 0.
func (q *queue) dropOldest(n int, reason string) *drop {
	if n == 0 {
		return nil
	}
	d := &drop{reason: reason, records: n, from: q.recs[0].ts, to: q.recs[n-1].ts}
	for _, r := range q.recs[:n] {
		d.samples += r.samples
	}
	q.remove(n)
	return d
}
