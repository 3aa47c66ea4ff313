package metrics

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestPutWritesEMF(t *testing.T) {
	var buf bytes.Buffer
	e := New(&buf)
	e.now = func() time.Time { return time.UnixMilli(1700000000000) }
	e.Put("IdleVolumes", 2, Count, map[string]string{"Pool": "web", "AZ": "eu-west-1a"})
	var got struct {
		AWS struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		IdleVolumes float64
		Pool, AZ    string
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	m := got.AWS.CloudWatchMetrics[0]
	if got.AWS.Timestamp != 1700000000000 || m.Namespace != "volsd" || len(m.Dimensions[0]) != 2 || m.Dimensions[0][0] != "AZ" ||
		m.Metrics[0].Name != "IdleVolumes" || m.Metrics[0].Unit != "Count" || got.IdleVolumes != 2 || got.Pool != "web" || got.AZ != "eu-west-1a" {
		t.Errorf("EMF line wrong: %s", buf.Bytes())
	}
	if bytes.Count(buf.Bytes(), []byte("\n")) != 1 {
		t.Error("want exactly one line")
	}
}
