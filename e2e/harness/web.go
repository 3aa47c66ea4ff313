package harness

import (
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// agentDir is the agent's own directory at the top of every mount
// (watermark, index, staging): a web server does not serve it.
const agentDir = ".volsd"

// WebServer is the web server of a simulated instance: it serves the
// instance's mount read-only over HTTP on 127.0.0.1, as nginx or Apache
// would serve the volume on EC2. It never leaves the mount (symlinks that
// point out of it are not followed) and hides the agent's .volsd/.
type WebServer struct {
	Dir string
	url string
	srv *http.Server
	ln  net.Listener
}

// StartWebServer serves dir on a free 127.0.0.1 port. Each request opens
// dir afresh and holds nothing open between requests, so the agent can
// unmount the volume (release) while the server runs, as on EC2.
func StartWebServer(dir string) (*WebServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w := &WebServer{Dir: dir, url: "http://" + ln.Addr().String() + "/", ln: ln}
	w.srv = &http.Server{Handler: http.HandlerFunc(w.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = w.srv.Serve(ln) }()
	return w, nil
}

func (w *WebServer) serve(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rw.Header().Set("Allow", "GET, HEAD")
		http.Error(rw, "read-only: GET and HEAD only", http.StatusMethodNotAllowed)
		return
	}
	if hidden(r.URL.Path) {
		http.NotFound(rw, r)
		return
	}
	root, err := os.OpenRoot(w.Dir)
	if err != nil {
		http.Error(rw, "the volume is not there: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer root.Close()
	http.FileServerFS(root.FS()).ServeHTTP(rw, r)
}

// hidden says whether a request path names the agent's directory or
// something in it.
func hidden(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == agentDir {
			return true
		}
	}
	return false
}

// URL is the server's base URL (ending in /).
func (w *WebServer) URL() string { return w.url }

// Close stops the server; open connections are closed at once.
func (w *WebServer) Close() error { return w.srv.Close() }
