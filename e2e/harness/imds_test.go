package harness

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

func TestIMDSServesIdentityToTheSDKClient(t *testing.T) {
	m, err := StartIMDS(IdentityDocument{InstanceID: "i-0b1c2d3e4f5a6b7c8", AvailabilityZone: "us-east-1b", Region: "us-east-1", AccountID: Account})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", m.URL())
	client := imds.New(imds.Options{}) // endpoint from the standard variable, as the agent does
	ctx := context.Background()
	doc, err := client.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		t.Fatal(err)
	}
	if doc.InstanceID != "i-0b1c2d3e4f5a6b7c8" || doc.AvailabilityZone != "us-east-1b" || doc.Region != "us-east-1" {
		t.Errorf("identity %+v", doc.InstanceIdentityDocument)
	}
	az, err := client.GetMetadata(ctx, &imds.GetMetadataInput{Path: "placement/availability-zone"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(az.Content)
	if string(b) != "us-east-1b" {
		t.Errorf("placement/availability-zone = %q", b)
	}
	creds, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(ctx)
	if err != nil {
		t.Fatalf("instance profile credentials: %v", err)
	}
	if creds.AccessKeyID == "" || creds.SessionToken == "" || !creds.Expires.After(time.Now()) {
		t.Errorf("credentials %+v", creds)
	}
}

func TestIMDSRequiresToken(t *testing.T) {
	m, err := StartIMDS(IdentityDocument{InstanceID: "i-0b1c2d3e4f5a6b7c8"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	resp, err := http.Get(m.URL() + "/latest/meta-data/instance-id")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET without a token: %d; IMDSv2-only answers 401", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPut, m.URL()+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "0")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("token with TTL 0: %d; want 400", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, m.URL()+"/latest/meta-data/instance-id", nil)
	req.Header.Set("X-aws-ec2-metadata-token", "forged")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET with a forged token: %d; want 401", resp.StatusCode)
	}
}
