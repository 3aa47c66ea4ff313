// Command testfn is a tiny Lambda for the Runtime API server's tests. The
// event says what to do: echo it, fail, sleep, exit, or report its
// environment and deadline. For SQS events it reports every message whose
// body is "fail" as a batch item failure.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type request struct {
	Echo    string            `json:"echo"`
	Fail    string            `json:"fail"`
	SleepMS int               `json:"sleepMs"`
	Exit    int               `json:"exit"`
	Env     string            `json:"env"`
	Records []json.RawMessage `json:"Records"`
}

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var r request
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	if len(r.Records) > 0 {
		var ev events.SQSEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, err
		}
		var resp events.SQSEventResponse
		for _, m := range ev.Records {
			if m.Body == "fail" {
				resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.MessageId})
			}
		}
		return resp, nil
	}
	if r.SleepMS > 0 {
		time.Sleep(time.Duration(r.SleepMS) * time.Millisecond)
	}
	if r.Exit != 0 {
		os.Exit(r.Exit)
	}
	if r.Fail != "" {
		return nil, errors.New(r.Fail)
	}
	lc, _ := lambdacontext.FromContext(ctx)
	dl, _ := ctx.Deadline()
	return map[string]any{
		"echo": r.Echo, "env": os.Getenv(r.Env), "requestId": lc.AwsRequestID,
		"arn": lc.InvokedFunctionArn, "deadlineInMs": time.Until(dl).Milliseconds(), "pid": os.Getpid(),
	}, nil
}

func main() { lambda.Start(handle) }
