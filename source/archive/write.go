package archive

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// Parallel writing: the tar stream is read by one goroutine, but creating,
// filling and closing thousands of small files is mostly system-call time
// that other cores can take. Small files are read into a buffer from a
// fixed set and written by a few workers while the reader goes on; large
// files are streamed by the reader itself. Memory stays bounded by the
// buffers, whatever the archive.
const (
	// smallFile is the largest file handed to a worker.
	smallFile = 256 << 10
	// writeBuffers bounds the small files read but not yet written: with
	// smallFile, 2 MiB.
	writeBuffers = 8
)

// writeWorkers is the number of goroutines writing small files; 0 writes
// every file on the reading goroutine. Measured on 2 cores with 3,000
// files of 87 KiB: 4 workers take half the time of none. Tests change it.
var writeWorkers = 4

// writeJob is a small file read whole, for a worker to write.
type writeJob struct {
	name string
	mode int64
	buf  *[]byte
}

// fileWriter creates the files of an extraction below root, the small ones
// on workers. Its methods other than the workers' are called by one
// goroutine.
type fileWriter struct {
	root *os.Root
	dirs *dirs // the workers' way to create files
	jobs chan writeJob
	free chan *[]byte
	wg   sync.WaitGroup

	mu       sync.Mutex
	firstErr error
}

// newFileWriter starts the workers; workers 0 writes every file inline.
func newFileWriter(root *os.Root, workers int) *fileWriter {
	w := &fileWriter{root: root}
	if workers <= 0 {
		return w
	}
	w.dirs = newDirs(root)
	w.jobs = make(chan writeJob, writeBuffers)
	w.free = make(chan *[]byte, writeBuffers)
	for range writeBuffers {
		w.free <- new([]byte)
	}
	w.wg.Add(workers)
	for range workers {
		go w.work()
	}
	return w
}

func (w *fileWriter) work() {
	defer w.wg.Done()
	for j := range w.jobs {
		if w.err() == nil {
			if err := w.dirs.create(j.name, j.mode, *j.buf); err != nil {
				w.setErr(err)
			}
		}
		w.free <- j.buf
	}
}

func (w *fileWriter) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.firstErr
}

func (w *fileWriter) setErr(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.firstErr == nil {
		w.firstErr = err
	}
}

// write creates the file of it with its body, on a worker when it is small,
// and returns the number of body bytes read. A worker's failure is
// returned by a later call or by wait.
func (w *fileWriter) write(it *item) (int64, error) {
	if err := w.err(); err != nil {
		return 0, err
	}
	if w.jobs == nil || it.size > smallFile {
		return writeFile(w.root, it)
	}
	buf := <-w.free
	if int64(cap(*buf)) < it.size {
		*buf = make([]byte, it.size, smallFile)
	}
	*buf = (*buf)[:it.size]
	n, err := io.ReadFull(it.body, *buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = refuse(it.name, fmt.Sprintf("file has %d bytes instead of %d", n, it.size), ErrInvalidArchive)
	}
	if err != nil {
		w.free <- buf
		return int64(n), err
	}
	w.jobs <- writeJob{name: it.name, mode: it.mode, buf: buf}
	return int64(n), nil
}

// wait stops the workers once they have written every file handed to them
// and returns the first error. It must be called exactly once.
func (w *fileWriter) wait() error {
	if w.jobs != nil {
		close(w.jobs)
		w.wg.Wait()
		w.dirs.close()
	}
	return w.err()
}

// writeFile creates the file of it exclusively (never following or
// replacing anything already there) and streams its body, returning the
// number of bytes written.
func writeFile(root *os.Root, it *item) (int64, error) {
	f, err := openNew(root, it.name)
	if err != nil {
		return 0, err
	}
	// CopyN, like the workers' ReadFull, ends with the file's last byte: an
	// error of the stream after it is returned by the next entry, so that
	// both ways count the same files.
	n, err := io.CopyN(f, it.body, it.size)
	if err == io.EOF {
		err = refuse(it.name, fmt.Sprintf("file has %d bytes instead of %d", n, it.size), ErrInvalidArchive)
	}
	return n, closeFile(f, it.mode, err)
}

// createFile creates the file name exclusively with content data.
func createFile(root *os.Root, name string, mode int64, data []byte) error {
	f, err := openNew(root, name)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return closeFile(f, mode, err)
}

func openNew(root *os.Root, name string) (*os.File, error) {
	return root.OpenFile(filepath.FromSlash(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// closeFile sets the mode of f and closes it, after the error err of
// writing it, if any. Files are not synced one by one: the extraction is
// made durable as a whole (see flushTree).
func closeFile(f *os.File, mode int64, err error) error {
	if err == nil {
		err = f.Chmod(os.FileMode(mode))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
