package bench

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/volsd/volsd/events"
)

// dirOrigin is a read-only S3 origin over a local directory: key K of
// the bucket is the file <dir>/K, served over HTTP on 127.0.0.1 with S3's
// GET API (path style, byte ranges, NoSuchKey) to the real SDK client the
// agent uses. The apply benchmark stores each blob as a hard link to its
// source file, so the agent reads its content from the same page cache
// rsync reads the source tree from; it pays for HTTP on the loopback and
// the SDK, not for a network.
type dirOrigin struct {
	bucket string
	dir    string
	gets   Calls
	srv    *httptest.Server
}

// start serves the directory and returns an S3 client for it.
func (o *dirOrigin) start() *s3.Client {
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	return s3.New(s3.Options{
		Region: region, BaseEndpoint: aws.String(o.srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("bench", "bench", ""),
		DisableLogOutputChecksumValidationSkipped: true,
	})
}

func (o *dirOrigin) close() {
	if o.srv != nil {
		o.srv.Close()
	}
}

func (o *dirOrigin) serve(w http.ResponseWriter, r *http.Request) {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	o.gets.Add("S3.GetObject")
	s3Error := func(status int, code, msg string) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, msg)
	}
	if bucket != o.bucket {
		s3Error(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
		return
	}
	if key == "" || strings.Contains(key, "..") {
		s3Error(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	f, err := os.Open(filepath.Join(o.dir, filepath.FromSlash(key)))
	if err != nil {
		s3Error(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		s3Error(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	w.Header().Set("ETag", `"`+strconv.FormatInt(fi.ModTime().UnixNano(), 16)+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// treeManifest is a content tree as the CLI would upload it: its manifest
// (canonical JSON and sha256) and the blob of every file.
type treeManifest struct {
	Manifest events.Manifest
	JSON     []byte
	SHA256   string
	Bytes    int64
	// Files maps each path of the tree to its file on disk.
	Files map[string]string
}

// manifestOf hashes every regular file under dir into a manifest.
func manifestOf(dir string) (*treeManifest, error) {
	t := &treeManifest{Manifest: events.Manifest{Version: events.ManifestVersion}, Files: map[string]string{}}
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			paths = append(paths, p)
		} else if !d.IsDir() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	entries := make([]events.ManifestEntry, len(paths))
	errs := make([]error, len(paths))
	var hashes errgroup.Group
	hashes.SetLimit(4)
	for i, p := range paths {
		hashes.Go(func() error {
			entries[i], errs[i] = hashEntry(dir, p)
			return nil // every error is joined below
		})
	}
	_ = hashes.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i, e := range entries {
		t.Files[e.Path] = paths[i]
		t.Bytes += e.Size
	}
	t.Manifest.Entries = entries
	if err := t.Manifest.Validate(); err != nil {
		return nil, err
	}
	if t.JSON, err = t.Manifest.Canonical(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(t.JSON)
	t.SHA256 = hex.EncodeToString(sum[:])
	return t, nil
}

func hashEntry(root, p string) (events.ManifestEntry, error) {
	f, err := os.Open(p)
	if err != nil {
		return events.ManifestEntry{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return events.ManifestEntry{}, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return events.ManifestEntry{}, err
	}
	rel, _ := filepath.Rel(root, p)
	return events.ManifestEntry{Path: filepath.ToSlash(rel), Type: events.TypeFile, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n, Mode: uint32(st.Mode().Perm()), Mtime: st.ModTime().Unix()}, nil
}

// publish puts the manifest and every blob into the origin directory:
// blobs as hard links to the tree's files (no copy), the manifest as a
// file.
func (o *dirOrigin) publish(t *treeManifest) error {
	if err := os.MkdirAll(filepath.Join(o.dir, "blobs"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(o.dir, "manifests"), 0o755); err != nil {
		return err
	}
	for _, e := range t.Manifest.Entries {
		dst := filepath.Join(o.dir, filepath.FromSlash(events.BlobKey(e.SHA256)))
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := os.Link(t.Files[e.Path], dst); err != nil {
			return fmt.Errorf("publish blob of %s: %w", e.Path, err)
		}
	}
	return os.WriteFile(filepath.Join(o.dir, filepath.FromSlash(events.ManifestKey(t.SHA256))), t.JSON, 0o644)
}
