package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volsd/volsd/internal/awserr"
)

// One failing call of the CLI, through the clients ConnectAWS builds,
// makes at most awserr.ClientAttempts HTTP attempts: the SDK's retryer
// retries it, and the awserr.Retry loop around it does not retry what the
// SDK gave up on (before, 8 loop tries × 3 SDK attempts = 24). Both a
// server error and throttling.
func TestOneCallMakesAtMostClientAttempts(t *testing.T) {
	fast := awserr.Backoff{Initial: time.Millisecond, Factor: 1, Max: time.Millisecond, Attempts: awserr.DefaultBackoff.Attempts}
	saved := awserr.DefaultBackoff
	awserr.DefaultBackoff = fast // the same tries, without the waits
	t.Cleanup(func() { awserr.DefaultBackoff = saved })

	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"503", http.StatusServiceUnavailable, ""},
		{"throttled", http.StatusServiceUnavailable, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var attempts atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				attempts.Add(1)
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			t.Setenv("AWS_ENDPOINT_URL", srv.URL)
			t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
			t.Setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
			t.Setenv("AWS_SESSION_TOKEN", "")
			t.Setenv("AWS_PROFILE", "")
			t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
			t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
			t.Setenv("AWS_S3_USE_PATH_STYLE", "true")
			cl, err := ConnectAWS(context.Background(), Config{Region: "eu-west-1", Bucket: "origin", Table: "volsd"})
			if err != nil {
				t.Fatal(err)
			}
			a := &App{Cfg: Config{Bucket: "origin"}, S3: cl.S3}
			if _, err := a.verified(context.Background(), "blobs/ab", "ab", 1); err == nil {
				t.Fatal("HeadObject against a failing endpoint succeeded")
			}
			if n := attempts.Load(); n > int64(awserr.ClientAttempts) {
				t.Errorf("one HeadObject made %d HTTP attempts, want at most %d", n, awserr.ClientAttempts)
			} else {
				t.Logf("one HeadObject: %d HTTP attempts (ClientAttempts %d)", n, awserr.ClientAttempts)
			}
		})
	}
}
