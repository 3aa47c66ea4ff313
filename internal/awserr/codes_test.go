package awserr

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// The errors below come out of the SDK's own deserializers: each is the
// error a real client returns for that service's wire response.

func respond(t *testing.T, status int, header map[string]string, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

var testCreds = credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")

// ec2Error is EC2's query-protocol error response for code.
func ec2Error(t *testing.T, code, msg string) error {
	url := respond(t, 400, map[string]string{"Content-Type": "text/xml"},
		`<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>`+code+`</Code><Message>`+msg+`</Message></Error></Errors><RequestID>r-1</RequestID></Response>`)
	c := ec2.New(ec2.Options{BaseEndpoint: &url, Region: "eu-west-1", Credentials: testCreds, Retryer: aws.NopRetryer{}})
	_, err := c.DescribeVolumes(context.Background(), &ec2.DescribeVolumesInput{})
	if err == nil {
		t.Fatalf("ec2 %s: no error", code)
	}
	return err
}

// ssmError is SSM's JSON-protocol error response for code.
func ssmError(t *testing.T, code, msg string) error {
	url := respond(t, 400, map[string]string{"Content-Type": "application/x-amz-json-1.1"},
		`{"__type":"`+code+`","message":"`+msg+`"}`)
	c := ssm.New(ssm.Options{BaseEndpoint: &url, Region: "eu-west-1", Credentials: testCreds, Retryer: aws.NopRetryer{}})
	_, err := c.GetCommandInvocation(context.Background(), &ssm.GetCommandInvocationInput{CommandId: aws.String("c"), InstanceId: aws.String("i")})
	if err == nil {
		t.Fatalf("ssm %s: no error", code)
	}
	return err
}

// ddbError is DynamoDB's JSON-protocol error response with body.
func ddbError(t *testing.T, body string) error {
	url := respond(t, 400, map[string]string{"Content-Type": "application/x-amz-json-1.0"}, body)
	c := dynamodb.New(dynamodb.Options{BaseEndpoint: &url, Region: "eu-west-1", Credentials: testCreds, Retryer: aws.NopRetryer{}})
	_, err := c.TransactWriteItems(context.Background(), &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{}})
	if err == nil {
		t.Fatalf("dynamodb %s: no error", body)
	}
	return err
}

func ddbCancelled(t *testing.T, reasons ...string) error {
	var rs []string
	for _, r := range reasons {
		rs = append(rs, `{"Code":"`+r+`"}`)
	}
	return ddbError(t, `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [`+strings.Join(reasons, ", ")+`]","CancellationReasons":[`+strings.Join(rs, ",")+`]}`)
}

func TestNamedPredicates(t *testing.T) {
	invocation := ssmError(t, "InvocationDoesNotExist", "")
	snapshot := ec2Error(t, "InvalidSnapshot.NotFound", "The snapshot 'snap-1' does not exist.")
	volume := ec2Error(t, "InvalidVolume.NotFound", "The volume 'vol-1' does not exist.")
	instance := ec2Error(t, "InvalidInstanceID.NotFound", "The instance ID 'i-1' does not exist")
	instState := ec2Error(t, "IncorrectInstanceState", "The instance 'i-1' is not 'running'.")
	token := ec2Error(t, "IdempotentParameterMismatch", "Client token already used before.")
	detached := ec2Error(t, "IncorrectState", "Volume 'vol-1' is in the 'available' state.")
	inUse := ec2Error(t, "VolumeInUse", "vol-1 is already attached to an instance")
	throttle := ec2Error(t, "RequestLimitExceeded", "Request limit exceeded.")
	table := ddbError(t, `{"__type":"com.amazonaws.dynamodb.v20120810#ResourceInUseException","message":"Table already exists: volsd"}`)
	ttl := ddbError(t, `{"__type":"com.amazonaws.coral.validate#ValidationException","message":"TimeToLive is already enabled"}`)
	all := []error{invocation, snapshot, volume, instance, instState, token, detached, inUse, throttle, table, ttl}

	for _, tc := range []struct {
		name string
		is   func(error) bool
		want error
	}{
		{"IsInvocationMissing", IsInvocationMissing, invocation},
		{"IsSnapshotNotFound", IsSnapshotNotFound, snapshot},
		{"IsVolumeNotFound", IsVolumeNotFound, volume},
		{"IsInstanceNotFound", IsInstanceNotFound, instance},
		{"IsIncorrectInstanceState", IsIncorrectInstanceState, instState},
		{"IsClientTokenReused", IsClientTokenReused, token},
		{"IsAlreadyDetached", IsAlreadyDetached, detached},
		{"IsTableExists", IsTableExists, table},
		{"IsTTLUnchanged", IsTTLUnchanged, ttl},
	} {
		for _, err := range all {
			if got := tc.is(err); got != (err == tc.want) {
				t.Errorf("%s(%v) = %v", tc.name, err, got)
			}
		}
		if tc.is(nil) {
			t.Errorf("%s(nil) = true", tc.name)
		}
	}
	// The typed errors still classify as before.
	if !IsNotFound(invocation) || !IsNotFound(snapshot) || !IsRetryable(throttle) || Classify(detached) != Invalid {
		t.Errorf("classes: invocation %v snapshot %v throttle %v detached %v", Classify(invocation), Classify(snapshot), Classify(throttle), Classify(detached))
	}
}

func TestIsItemConditionFailed(t *testing.T) {
	err := ddbCancelled(t, "None", "ConditionalCheckFailed", "TransactionConflict")
	for i, want := range []bool{false, true, false, false} {
		if got := IsItemConditionFailed(err, i); got != want {
			t.Errorf("IsItemConditionFailed(item %d) = %v, want %v", i, got, want)
		}
	}
	if IsItemConditionFailed(err, -1) || IsItemConditionFailed(nil, 0) {
		t.Error("out of range or nil taken for a condition failure")
	}
	if IsItemConditionFailed(ddbError(t, `{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}`), 0) {
		t.Error("a plain ConditionalCheckFailedException has no items")
	}
	if !IsConditionFailed(err) {
		t.Error("IsConditionFailed of a cancelled transaction with a condition failure")
	}
}

// codeLike is what an AWS error code or cancellation reason looks like.
var codeLike = regexp.MustCompile(`^[A-Z][A-Za-z0-9]+(\.[A-Za-z0-9]+)*$`)

// knownCodes returns every code-like string literal in this package's
// non-test files: the codes awserr decides on.
func knownCodes(t *testing.T) map[string]bool {
	t.Helper()
	codes := map[string]bool{}
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		add := func(e ast.Expr) {
			if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && codeLike.MatchString(s) && s != "None" {
					codes[s] = true
				}
			}
		}
		// The literals awserr matches codes against: set(…)'s
		// arguments, comparisons and cases.
		ast.Inspect(af, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if id, ok := n.Fun.(*ast.Ident); ok && (id.Name == "set" || id.Name == "hasAny") {
					for _, a := range n.Args {
						add(a)
					}
				}
			case *ast.BinaryExpr:
				if n.Op == token.EQL || n.Op == token.NEQ {
					add(n.X)
					add(n.Y)
				}
			case *ast.CaseClause:
				for _, e := range n.List {
					add(e)
				}
			}
			return true
		})
	}
	return codes
}

// TestNoCodeComparisonsOutside keeps the rule: no non-test Go file outside
// internal/awserr (and the fakes of internal/awsfake, which produce codes)
// compares an AWS error code itself: no awserr.Code(…) or ErrorCode() in a
// comparison or switch, no quoted code awserr knows compared or cased.
// Such a decision gets a named predicate here instead.
func TestNoCodeComparisonsOutside(t *testing.T) {
	codes := knownCodes(t)
	if !codes["InvocationDoesNotExist"] || !codes["ConditionalCheckFailed"] || !codes["RequestLimitExceeded"] {
		t.Fatalf("known codes not collected: %d", len(codes))
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repo root %s: %v", root, err)
	}
	isCode := func(e ast.Expr) bool {
		call, ok := e.(*ast.CallExpr)
		if !ok {
			return false
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return false
		}
		if id, ok := sel.X.(*ast.Ident); ok && id.Name == "awserr" && sel.Sel.Name == "Code" {
			return true
		}
		return sel.Sel.Name == "ErrorCode" && len(call.Args) == 0
	}
	isKnown := func(e ast.Expr) bool {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return false
		}
		s, err := strconv.Unquote(lit.Value)
		return err == nil && codes[s]
	}
	var found []string
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			name := d.Name()
			switch {
			case rel == "internal/awserr", rel == "internal/awsfake",
				path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")),
				name == "testdata", name == "node_modules", name == "cdk.out", name == "build", name == "vendor":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		af, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		checked++
		report := func(n ast.Node, what string) {
			found = append(found, fset.Position(n.Pos()).String()[len(root)+1:]+": "+what)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BinaryExpr:
				if n.Op != token.EQL && n.Op != token.NEQ {
					return true
				}
				switch {
				case isCode(n.X) || isCode(n.Y):
					report(n, "error code compared")
				case isKnown(n.X) || isKnown(n.Y):
					report(n, "AWS error code compared")
				}
			case *ast.SwitchStmt:
				if n.Tag != nil && isCode(n.Tag) {
					report(n, "switch on an error code")
				}
			case *ast.CaseClause:
				for _, e := range n.List {
					if isKnown(e) {
						report(e, "AWS error code in a case")
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d files checked under %s", checked, root)
	}
	for _, f := range found {
		t.Errorf("%s: ask a named predicate of internal/awserr instead", f)
	}
}

func TestIsRefusedAndPermission(t *testing.T) {
	denied := ddbError(t, `{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"User: arn:aws:sts::1:assumed-role/r/i-1 is not authorized to perform: dynamodb:Query on resource: arn:aws:dynamodb:eu-west-1:1:table/volsd"}`)
	unauthorized := ec2Error(t, "UnauthorizedOperation", "You are not authorized to perform this operation.")
	expired := ddbError(t, `{"__type":"com.amazon.coral.service#ExpiredTokenException","message":"The security token included in the request is expired"}`)
	validation := ddbError(t, `{"__type":"com.amazon.coral.validate#ValidationException","message":"1 validation error detected"}`)
	throttled := ddbError(t, `{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}`)
	for _, tc := range []struct {
		name    string
		err     error
		refused bool
		perm    string
	}{
		{"dynamodb denied", denied, true, "dynamodb:TransactWriteItems"},
		{"ec2 unauthorized", unauthorized, true, "ec2:DescribeVolumes"},
		{"bad request", validation, true, "dynamodb:TransactWriteItems"},
		{"expired credentials", expired, false, "dynamodb:TransactWriteItems"},
		{"throttled", throttled, false, "dynamodb:TransactWriteItems"},
		{"not found", ssmError(t, "InvocationDoesNotExist", ""), false, "ssm:GetCommandInvocation"},
		{"condition", ddbCancelled(t, "ConditionalCheckFailed"), false, "dynamodb:TransactWriteItems"},
		{"no AWS error", context.DeadlineExceeded, false, ""},
		{"nil", nil, false, ""},
	} {
		if got := IsRefused(tc.err); got != tc.refused {
			t.Errorf("%s: IsRefused(%v) = %v", tc.name, tc.err, got)
		}
		if got := Permission(tc.err); got != tc.perm {
			t.Errorf("%s: Permission = %q, want %q", tc.name, got, tc.perm)
		}
	}
	if !IsAccessDenied(denied) || !IsAccessDenied(unauthorized) || IsAccessDenied(validation) {
		t.Error("IsAccessDenied")
	}
}

// A loop around an SDK call does not retry what the SDK's retryer gave up
// on; throttling still waits in RetryThrottled (the bucket wait the SDK
// does not do); errors from fakes, without the SDK's mark, are retried.
func TestLoopsDoNotRetryWhatTheSDKGaveUpOn(t *testing.T) {
	fast := Backoff{Initial: time.Microsecond, Factor: 1, Max: time.Microsecond, Attempts: 5}
	sleep := func(context.Context, time.Duration) error { return nil }
	exhausted := &retry.MaxAttemptsError{Attempt: 8, Err: api("InternalError", "")}
	throttledOut := &retry.MaxAttemptsError{Attempt: 8, Err: api("RequestLimitExceeded", "")}
	count := func(run func(fn func(context.Context) error) error, err error) int {
		calls := 0
		_ = run(func(context.Context) error { calls++; return err })
		return calls
	}
	retryLoop := func(fn func(context.Context) error) error { return Retry(context.Background(), fast, fn) }
	throttleLoop := func(fn func(context.Context) error) error {
		return RetryThrottled(context.Background(), fast, fast, sleep, fn)
	}
	budget := func(fn func(context.Context) error) error { return NewBudget(fast).Retry(context.Background(), fn) }
	for name, loop := range map[string]func(func(context.Context) error) error{"Retry": retryLoop, "RetryThrottled": throttleLoop, "Budget": budget} {
		if n := count(loop, exhausted); n != 1 {
			t.Errorf("%s: %d calls for an error the SDK gave up on, want 1", name, n)
		}
		if n := count(loop, api("InternalError", "")); n != 5 {
			t.Errorf("%s: %d calls for a fake's error, want 5", name, n)
		}
	}
	if n := count(throttleLoop, throttledOut); n != 5 {
		t.Errorf("RetryThrottled: %d calls for a throttle the SDK gave up on, want 5 (the bucket wait)", n)
	}
	if !SDKRetried(fmt.Errorf("op: %w", errors.Join(api("ThrottlingException", ""), ratelimit.QuotaExceededError{Available: 0, Requested: 5}))) {
		t.Error("quota exceeded not seen as retried")
	}
}
