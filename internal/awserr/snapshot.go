package awserr

// IsSnapshotInUse reports whether DeleteSnapshot failed because the
// snapshot is in use (by a registered AMI, or a volume still being created
// from it): leave it and try again later.
func IsSnapshotInUse(err error) bool { return Code(err) == "InvalidSnapshot.InUse" }
