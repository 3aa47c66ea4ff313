package story

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/volsd/volsd/e2e/harness"
	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/checksum"
	"github.com/volsd/volsd/internal/cli"
)

// Poison plays a poisoned journal entry with the real agents: a blob whose
// bytes in the origin differ from its name gets into the journal, every
// agent refuses it, volsd status shows the pool stalled there, a new
// instance waits in `up` instead of failing, volsd repair puts the right
// bytes back, and every instance converges — the new one enters service.
func Poison(ctx context.Context, c *harness.Cluster, n *Narrator, converge time.Duration) error {
	op, err := NewOperator(c)
	if err != nil {
		return err
	}
	done := n.Step("reconcile fills the idle pool; launch 1 instance; push a small tree")
	if _, err := c.Schedule(ctx, "reconcile"); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if _, err := scaleOut(ctx, c, 1); err != nil {
		return err
	}
	src := filepath.Join(c.WorkDir(), "content", Remote)
	for p, body := range map[string]string{"index.html": "<h1>volsd</h1>\n", "css/site.css": "body{margin:0}\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(body), 0o644); err != nil {
			return err
		}
	}
	if _, err := op.Push(ctx, src, Remote); err != nil {
		return err
	}
	done("pushed")

	done = n.Step("a blob with other bytes under its name gets past the checks into the journal")
	// At least cli.DefaultDirectPutBelow: smaller blobs the CLI uploads
	// without asking S3 first, which would overwrite the planted bytes; a
	// blob this size it checks with a checksum-aware HeadObject, and the
	// damaged object passes that check as a real damaged origin would.
	right := []byte("<p>the right bytes of the poisoned page</p>\n" + strings.Repeat("<!-- padding -->\n", (cli.DefaultDirectPutBelow+1023)/17))
	page := filepath.Join(src, "poisoned.html")
	if err := os.WriteFile(page, right, 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256(right)
	sha := hex.EncodeToString(sum[:])
	b64, _ := checksum.FromHex(sha)
	wrong := []byte(strings.Replace(string(right), "right", "wrong", 1))
	// moto stores the checksum it is given without checking it, so this
	// plays a damaged origin object that AWS would have refused.
	if _, err := c.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: &c.Names.Bucket, Key: aws.String(events.BlobKey(sha)), Body: strings.NewReader(string(wrong)),
		ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(b64)}); err != nil {
		return err
	}
	if _, err := op.PushNoWait(ctx, src, Remote); err != nil {
		return err
	}
	var status string
	if err := WaitFor(ctx, converge, "volsd status shows the pool stalled", func() (bool, error) {
		status, err = op.Status(ctx)
		return strings.Contains(status, "STALLED at seq") && strings.Contains(status, "sha256 mismatch"), err
	}); err != nil {
		return fmt.Errorf("%w\n%s", err, status)
	}
	if !strings.Contains(status, "volsd repair") {
		return fmt.Errorf("volsd status names no fix:\n%s", status)
	}
	done("every agent refuses it: %s", firstLine(status, "STALLED"))

	done = n.Step("scale out by 1 while stalled: the new instance waits in up (heartbeating its hook), it does not fail")
	launches, err := c.Group.ScaleOut(ctx, 1)
	if err != nil {
		return err
	}
	type waited struct {
		res []harness.LaunchResult
		err error
	}
	inService := make(chan waited, 1)
	go func() {
		res, err := c.Group.WaitInService(ctx, launches)
		inService <- waited{res, err}
	}()
	select {
	case w := <-inService:
		return fmt.Errorf("the new instance left the launch hook while the pool was stalled: %+v %v", w.res, w.err)
	case <-time.After(20 * time.Second):
	}
	done("%s still in its launch hook after 20 s", launches[0].InstanceID)

	done = n.Step("volsd repair from the local copy; push once more: every instance converges, the new one enters service")
	if out, err := op.run(ctx, "repair", page); err != nil {
		return fmt.Errorf("volsd repair: %w\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(src, "after.html"), []byte("<p>after the repair</p>\n"), 0o644); err != nil {
		return err
	}
	want, err := Pushed(c.WorkDir(), src, Remote)
	if err != nil {
		return err
	}
	if _, err := op.Push(ctx, src, Remote); err != nil {
		return err
	}
	var w waited
	select {
	case w = <-inService:
	case <-time.After(converge):
		return fmt.Errorf("the new instance did not enter service within %s of the repair", converge)
	}
	if w.err != nil || len(w.res) != 1 || w.res[0].Result != "CONTINUE" {
		return fmt.Errorf("the new instance after the repair: %+v %v", w.res, w.err)
	}
	if err := WaitConverged(ctx, c, want, converge); err != nil {
		return err
	}
	if status, err = op.Status(ctx); err != nil || strings.Contains(status, "STALLED") {
		return fmt.Errorf("still stalled after the repair (%v):\n%s", err, status)
	}
	done("%d instances in service with the right bytes; the stall is gone", len(c.Group.InService()))
	return nil
}

// firstLine returns the first line of s that contains sub.
func firstLine(s, sub string) string {
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
