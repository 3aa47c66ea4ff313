package push_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	lambdaevents "github.com/aws/aws-lambda-go/events"

	"github.com/volsd/volsd/events"
	"github.com/volsd/volsd/internal/store"
)

const okSHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// putBody is a put request with the given path and request ID, whose blob
// need not exist (schema checks come first).
func putBody(id, path string) string {
	p, _ := json.Marshal(path)
	return `{"version":1,"requestId":"` + id + `","op":"put","path":` + string(p) + `,"blob":{"sha256":"` + okSHA + `","size":1,"mode":420}}`
}

type hostileCase struct {
	name     string
	body     string
	recordID string // where the rejection is recorded; "" = the stand-in sqs:<messageId>
	reason   string // what the recorded reason must say
}

// hostileCases are bodies the push Lambda must refuse: hostile paths,
// malformed requests, and requests whose content in the origin is wrong.
func hostileCases(r *rig) []hostileCase {
	cases := []hostileCase{}
	for i, p := range []struct{ path, reason string }{
		{"/etc/passwd", "relative"},
		{"../etc/passwd", `".."`},
		{"a/../../b", `".."`},
		{"a/..", `".."`},
		{"..", `".."`},
		{"./a", `"."`},
		{"a/./b", `"."`},
		{".", "root"},
		{"", "empty"},
		{"a/b/", "clean"},
		{"a//b", "clean"},
		{"a\x00b", "control"},
		{"a\nb", "control"},
		{"a\tb", "control"},
		{"a\x1b[31mb", "control"},
		{"a\x7fb", "control"},
		{"evil\r", "control"},
		{".volsd", "reserved"},
		{".volsd/state.json", "reserved"},
		{strings.Repeat("a/", 600), "at most 1024 bytes"},
		{strings.Repeat("x", 256), "255"},
		{"//etc/shadow", "relative"},
	} {
		id := fmt.Sprintf("hostile-path-%02d", i)
		cases = append(cases, hostileCase{"path " + fmt.Sprintf("%q", p.path), putBody(id, p.path), id, p.reason})
	}
	good := putBody("%s", "a")
	mal := func(name, old, new, reason string) {
		id := "malformed-" + strings.ReplaceAll(name, " ", "-")
		b := strings.Replace(fmt.Sprintf(good, id), old, new, 1)
		cases = append(cases, hostileCase{name, b, id, reason})
	}
	mal("version 2", `"version":1`, `"version":2`, "unsupported schema version")
	mal("version string", `"version":1`, `"version":"1"`, "wrong type")
	mal("unknown op", `"op":"put"`, `"op":"chmod"`, "put, sync or delete")
	mal("uppercase op", `"op":"put"`, `"op":"PUT"`, "put, sync or delete")
	mal("missing op", `"op":"put",`, ``, "op: is required")
	mal("sha uppercase", okSHA, strings.ToUpper(okSHA), "lowercase hex")
	mal("sha short", okSHA, okSHA[:63], "64")
	mal("negative size", `"size":1`, `"size":-1`, ">= 0")
	mal("setuid", `"mode":420`, `"mode":2541`, "setuid")
	mal("type bits", `"mode":420`, `"mode":33188`, "permission bits")
	mal("unknown field", `"op"`, `"pool":"other","op"`, "not a known field")
	mal("trailing data", `420}}`, `420}}{"op":"delete"}`, "after the JSON object")
	mal("put with manifest", `}}`, `},"manifest":{"sha256":"`+okSHA+`"}}`, "must be absent")
	cases = append(cases,
		hostileCase{"put without blob", `{"version":1,"requestId":"no-blob","op":"put","path":"a"}`, "no-blob", "blob: is required"},
		hostileCase{"sync without manifest", `{"version":1,"requestId":"no-man","op":"sync","path":"a"}`, "no-man", "manifest: is required"},
		hostileCase{"delete root", `{"version":1,"requestId":"del-root","op":"delete","path":"."}`, "del-root", "root"},
		hostileCase{"delete with blob", `{"version":1,"requestId":"del-blob","op":"delete","path":"a","blob":{"sha256":"` + okSHA + `","size":1,"mode":420}}`, "del-blob", "neither"},
		// no usable request ID: recorded under the SQS message ID
		hostileCase{"not json", `put a please`, "", "not valid JSON"},
		hostileCase{"empty body", ``, "", "empty"},
		hostileCase{"json array", `[1,2]`, "", "wrong type"},
		hostileCase{"null", `null`, "", "unsupported schema version"},
		hostileCase{"request id with slash", strings.Replace(fmt.Sprintf(good, "x"), `"x"`, `"a/b"`, 1), "", "only letters"},
		hostileCase{"request id too long", strings.Replace(fmt.Sprintf(good, "x"), `"x"`, `"`+strings.Repeat("r", 129)+`"`, 1), "", "1 to 128"},
		hostileCase{"invalid utf8", strings.Replace(fmt.Sprintf(good, "utf"), `"path":"a"`, "\"path\":\"a\xffb\"", 1), "utf", "UTF-8"},
		hostileCase{"huge body", `{"version":1,"requestId":"huge","op":"delete","path":"` + strings.Repeat("a", events.MaxPushRequestBytes) + `"}`, "", "at most"},
	)

	// Requests that pass the schema but whose content in the origin is wrong.
	content := []byte("twelve bytes")
	r.put(events.BlobKey(sha(content)), content)
	cases = append(cases, hostileCase{"blob size mismatch",
		`{"version":1,"requestId":"size-lie","op":"put","path":"a","blob":{"sha256":"` + sha(content) + `","size":13,"mode":420}}`,
		"size-lie", "12 bytes, not 13"})
	badManifest := func(name, id string, raw []byte, reason string) {
		key := sha(raw)
		r.put(events.ManifestKey(key), raw)
		cases = append(cases, hostileCase{name, `{"version":1,"requestId":"` + id + `","op":"sync","path":"site","manifest":{"sha256":"` + key + `"}}`, id, reason})
	}
	entry := func(path string) string {
		p, _ := json.Marshal(path)
		return `{"path":` + string(p) + `,"sha256":"` + sha(content) + `","size":12,"mode":420}`
	}
	badManifest("manifest dotdot", "man-dotdot", []byte(`{"version":1,"entries":[`+entry("../../etc/cron.d/x")+`]}`), `".."`)
	badManifest("manifest reserved", "man-reserved", []byte(`{"version":1,"entries":[`+entry(".volsd/state.json")+`]}`), "reserved")
	badManifest("manifest absolute", "man-abs", []byte(`{"version":1,"entries":[`+entry("/etc/passwd")+`]}`), "relative")
	badManifest("manifest duplicate", "man-dup", []byte(`{"version":1,"entries":[`+entry("a")+`,`+entry("a")+`]}`), "twice")
	badManifest("manifest file and dir", "man-clash", []byte(`{"version":1,"entries":[`+entry("a")+`,`+entry("a/b")+`]}`), "also the directory")
	badManifest("manifest symlink field", "man-link", []byte(`{"version":1,"entries":[{"path":"l","sha256":"`+sha(content)+`","size":12,"mode":420,"symlink":"/etc"}]}`), "not a known field")
	badManifest("manifest version", "man-v3", []byte(`{"version":3,"entries":[]}`), "unsupported manifest version")
	badManifest("manifest absolute link", "man-abs-link", []byte(`{"version":2,"entries":[{"path":"l","type":"link","target":"/etc"}]}`), "must be relative")
	badManifest("manifest escaping link", "man-esc-link", []byte(`{"version":2,"entries":[{"path":"d/l","type":"link","target":"../../x"}]}`), "leads outside the pushed tree")
	badManifest("manifest entry under a link", "man-under-link", []byte(`{"version":2,"entries":[{"path":"l","type":"link","target":"d"},{"path":"l/f","type":"dir","mode":493}]}`), "is a link and also the directory")
	badManifest("manifest not json", "man-junk", []byte("#!/bin/sh\nrm -rf /\n"), "not valid JSON")
	badManifest("manifest blob size", "man-size", []byte(`{"version":1,"entries":[{"path":"a","sha256":"`+sha(content)+`","size":99,"mode":420}]}`), "12 bytes, not 99")
	// a manifest stored under a name that is not its hash
	lie := []byte(`{"version":1,"entries":[]}` + "\n")
	r.put(events.ManifestKey(okSHA), lie)
	cases = append(cases, hostileCase{"manifest hash mismatch",
		`{"version":1,"requestId":"man-lie","op":"sync","path":"site","manifest":{"sha256":"` + okSHA + `"}}`, "man-lie", "does not match its name"})
	return cases
}

// TestHostileMessagesAreRejectedWithTheirReason: every hostile or malformed
// message fails its item (so it reaches the DLQ), is recorded as rejected
// with a reason that names the rule, appears in ListRejected, and nothing
// enters the journal or reaches the instances.
func TestHostileMessagesAreRejectedWithTheirReason(t *testing.T) {
	r := newRig(t, nil)
	cases := hostileCases(r)
	if len(cases) < 40 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	ctx := context.Background()
	for start := 0; start < len(cases); start += 10 {
		var msgs []lambdaevents.SQSMessage
		for i := start; i < min(start+10, len(cases)); i++ {
			msgs = append(msgs, sqsMessage(fmt.Sprintf("0000%04d-aaaa-bbbb-cccc-000000000000", i), cases[i].body, 1))
		}
		resp := r.handle(batch(msgs...))
		failed := failedIDs(resp)
		for k, m := range msgs {
			tc := cases[start+k]
			t.Run(tc.name, func(t *testing.T) {
				if !failed[m.MessageId] {
					t.Fatalf("not reported as a batch item failure")
				}
				id := tc.recordID
				if id == "" {
					id = "sqs:" + m.MessageId
				}
				rec, err := r.st.GetRequest(ctx, "web", id)
				if err != nil {
					t.Fatalf("no record under %s: %v", id, err)
				}
				if rec.State != store.RequestRejected || !strings.Contains(rec.Reason, tc.reason) {
					t.Fatalf("record %s: state %s reason %q, want it to say %q", id, rec.State, rec.Reason, tc.reason)
				}
			})
		}
	}
	if j := r.journal(); len(j) != 0 {
		t.Fatalf("hostile requests reached the journal: %+v", j)
	}
	if n := r.ssm.Calls("SendCommand"); n != 0 {
		t.Fatalf("%d SendCommand calls for a batch without valid requests", n)
	}
	rej, err := r.st.ListRejected(ctx, "web", 0)
	if err != nil || len(rej) != len(cases) {
		t.Fatalf("ListRejected: %d of %d, %v", len(rej), len(cases), err)
	}
	if !strings.Contains(r.logs.String(), `"msg":"push request rejected"`) {
		t.Fatal("rejections are not logged")
	}

	// Redelivery changes nothing: same records, still failing toward the DLQ.
	msg := sqsMessage("00000000-aaaa-bbbb-cccc-000000000000", cases[0].body, 2)
	if resp := r.handle(batch(msg)); !failedIDs(resp)[msg.MessageId] {
		t.Fatal("a redelivered rejected message was accepted")
	}
	if again, _ := r.st.ListRejected(ctx, "web", 0); len(again) != len(cases) {
		t.Fatalf("redelivery added rejections: %d", len(again))
	}
}

// TestMalformedBodyReusingAnAppendedIDGoesToTheDLQ: a broken body that
// names an appended request's ID neither changes its record nor is
// accepted.
func TestMalformedBodyReusingAnAppendedIDGoesToTheDLQ(t *testing.T) {
	r := newRig(t, nil)
	if resp := r.handle(batch(sqsMessage("m1", body(t, deleteReq("taken", "x")), 1))); len(resp.BatchItemFailures) != 0 {
		t.Fatal(resp)
	}
	resp := r.handle(batch(sqsMessage("m2", `{"version":1,"requestId":"taken","op":"delete","path":"../x"}`, 1)))
	if !failedIDs(resp)["m2"] {
		t.Fatal("malformed body accepted")
	}
	rec, _ := r.st.GetRequest(context.Background(), "web", "taken")
	if rec.State != store.RequestAppended || rec.Seq != 1 {
		t.Fatalf("record changed: %+v", rec)
	}
}
