package awserr

import (
	"errors"
	"fmt"
	"testing"

	"github.com/aws/smithy-go"
)

func TestIsSnapshotInUse(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("delete: %w", &smithy.GenericAPIError{Code: "InvalidSnapshot.InUse", Message: "The snapshot snap-1 is currently in use by ami-1"}), true},
		{&smithy.GenericAPIError{Code: "InvalidSnapshot.NotFound"}, false},
		{errors.New("InvalidSnapshot.InUse"), false},
		{nil, false},
	} {
		if got := IsSnapshotInUse(tc.err); got != tc.want {
			t.Errorf("IsSnapshotInUse(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
