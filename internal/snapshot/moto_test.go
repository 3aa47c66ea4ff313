package snapshot_test

import (
	"context"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/volsd/volsd/internal/awserr"
	"github.com/volsd/volsd/internal/testenv"
)

func motoConfig(t testing.TB) aws.Config { return testenv.Moto(t) }

// motoInstance starts an instance on moto and returns its ID.
func motoInstance(t testing.TB, c *ec2.Client) string {
	t.Helper()
	ctx := context.Background()
	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{MaxResults: aws.Int32(5)})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("moto images: %v %v", imgs, err)
	}
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: imgs.Images[0].ImageId, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

// motoSSMWithDocuments returns an SSM client on moto where the volsd-Freeze
// and volsd-Thaw documents of infra/documents exist.
func motoSSMWithDocuments(t testing.TB, cfg aws.Config) *ssm.Client {
	t.Helper()
	c := ssm.NewFromConfig(cfg)
	for _, kind := range []string{"Freeze", "Thaw"} {
		body, err := os.ReadFile("../../infra/documents/" + kind + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.CreateDocument(context.Background(), &ssm.CreateDocumentInput{
			Name: aws.String("volsd-" + kind), Content: aws.String(string(body)),
			DocumentFormat: ssmtypes.DocumentFormatYaml, DocumentType: ssmtypes.DocumentTypeCommand,
		})
		if err != nil && awserr.Code(err) != "DocumentAlreadyExists" {
			t.Fatalf("create document volsd-%s on moto: %v", kind, err)
		}
	}
	return c
}

// motoCommands lists the documents moto ran for this test's pool on
// instance, oldest first. (moto sends an InstanceIds command to every
// instance, so commands are told apart by the pool in their comment.)
func motoCommands(t testing.TB, c *ssm.Client, instance, pool string) []string {
	t.Helper()
	out, err := c.ListCommands(context.Background(), &ssm.ListCommandsInput{InstanceId: aws.String(instance)})
	if err != nil {
		t.Fatal(err)
	}
	cmds := out.Commands
	sort.SliceStable(cmds, func(i, j int) bool {
		return aws.ToTime(cmds[i].RequestedDateTime).Before(aws.ToTime(cmds[j].RequestedDateTime))
	})
	var docs []string
	for _, cmd := range cmds {
		if strings.Contains(aws.ToString(cmd.Comment), " "+pool+" ") && strings.HasPrefix(aws.ToString(cmd.DocumentName), "volsd-") {
			docs = append(docs, aws.ToString(cmd.DocumentName))
		}
	}
	return docs
}
