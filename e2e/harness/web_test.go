package harness

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The instance web server serves the mount's files, refuses to leave it
// through a symlink, hides the agent's .volsd/, answers only GET and HEAD,
// and holds the mount open only during a request (so it can be unmounted).
func TestWebServerServesOnlyTheMount(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret")
	for p, body := range map[string]string{"www/index.txt": "hello", ".volsd/state.json": `{"seq":1}`} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(outside, []byte("outside the mount"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "www", "escape")); err != nil {
		t.Fatal(err)
	}
	w, err := StartWebServer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	get := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, w.URL()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(http.MethodGet, "www/index.txt"); code != 200 || body != "hello" {
		t.Errorf("GET www/index.txt: %d %q; want 200 hello", code, body)
	}
	if code, body := get(http.MethodGet, "www/escape"); code == 200 || strings.Contains(body, "outside") {
		t.Errorf("GET www/escape (symlink out of the mount): %d %q; want it refused", code, body)
	}
	for _, p := range []string{".volsd/state.json", ".volsd/", "www/../.volsd/state.json"} {
		if code, body := get(http.MethodGet, p); code != 404 || strings.Contains(body, "seq") {
			t.Errorf("GET %s: %d %q; want 404", p, code, body)
		}
	}
	if code, _ := get(http.MethodPut, "www/index.txt"); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d; want 405", code)
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(target, dir) {
			t.Errorf("after the requests the server still holds %s open", target)
		}
	}
}
