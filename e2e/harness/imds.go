package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// IdentityDocument is the instance identity document IMDS serves at
// /latest/dynamic/instance-identity/document.
type IdentityDocument struct {
	AccountID        string    `json:"accountId"`
	Architecture     string    `json:"architecture"`
	AvailabilityZone string    `json:"availabilityZone"`
	ImageID          string    `json:"imageId"`
	InstanceID       string    `json:"instanceId"`
	InstanceType     string    `json:"instanceType"`
	PendingTime      time.Time `json:"pendingTime"`
	PrivateIP        string    `json:"privateIp"`
	Region           string    `json:"region"`
	Version          string    `json:"version"`
}

// IMDS is a fake EC2 instance metadata service in IMDSv2-only mode
// (HttpTokens=required) for one simulated instance, on its own 127.0.0.1
// port. Agents reach it through AWS_EC2_METADATA_SERVICE_ENDPOINT.
type IMDS struct {
	doc IdentityDocument
	srv *http.Server
	url string

	mu     sync.Mutex
	tokens map[string]time.Time // token → expiry
}

// StartIMDS serves doc on a free 127.0.0.1 port.
func StartIMDS(doc IdentityDocument) (*IMDS, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &IMDS{doc: doc, tokens: map[string]time.Time{}, url: "http://" + ln.Addr().String()}
	m.srv = &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = m.srv.Serve(ln) }()
	return m, nil
}

// URL is the endpoint for AWS_EC2_METADATA_SERVICE_ENDPOINT.
func (m *IMDS) URL() string { return m.url }

// Close stops the server.
func (m *IMDS) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return m.srv.Shutdown(ctx)
}

const (
	imdsTokenHeader = "X-Aws-Ec2-Metadata-Token"
	imdsTTLHeader   = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

func (m *IMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		m.token(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "", http.StatusMethodNotAllowed)
		return
	}
	if !m.valid(r.Header.Get(imdsTokenHeader)) {
		// IMDSv2 required: no or bad token is 401 Unauthorized.
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	p := strings.TrimSuffix(r.URL.Path, "/")
	d := m.doc
	var body string
	switch p {
	case "/latest/dynamic/instance-identity/document":
		b, _ := json.MarshalIndent(d, "", "  ")
		body = string(b)
	case "/latest/meta-data/instance-id":
		body = d.InstanceID
	case "/latest/meta-data/placement/availability-zone":
		body = d.AvailabilityZone
	case "/latest/meta-data/placement/region":
		body = d.Region
	case "/latest/meta-data/instance-type":
		body = d.InstanceType
	case "/latest/meta-data/ami-id":
		body = d.ImageID
	case "/latest/meta-data/local-ipv4":
		body = d.PrivateIP
	case "/latest/meta-data/iam/security-credentials":
		body = m.role()
	case "/latest/meta-data/iam/security-credentials/" + m.role():
		// The instance profile's temporary credentials, as the SDK's EC2
		// role provider reads them (emulators accept any key).
		b, _ := json.Marshal(map[string]string{
			"Code": "Success", "LastUpdated": time.Now().UTC().Format(time.RFC3339), "Type": "AWS-HMAC",
			"AccessKeyId": "ASIAVOLSDLOCAL" + strings.ToUpper(d.InstanceID[2:8]), "SecretAccessKey": "local-instance-secret",
			"Token": "local-instance-token", "Expiration": time.Now().Add(6 * time.Hour).UTC().Format(time.RFC3339),
		})
		body = string(b)
	case "/latest/meta-data/tags/instance":
		body = "Name\nvolsd:pool"
	case "/latest/meta-data":
		body = "ami-id\niam/\ninstance-id\ninstance-type\nlocal-ipv4\nplacement/"
	case "/latest/meta-data/placement":
		body = "availability-zone\nregion"
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(body))
}

func (m *IMDS) role() string { return "volsd-instance" }

func (m *IMDS) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		http.Error(w, "", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "", http.StatusForbidden) // IMDS refuses proxied token requests
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(imdsTTLHeader))
	if err != nil || ttl < 1 || ttl > 21600 {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	m.mu.Lock()
	m.tokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
	m.mu.Unlock()
	w.Header().Set(imdsTTLHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(tok))
}

func (m *IMDS) valid(tok string) bool {
	if tok == "" {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.tokens[tok]
	return ok && time.Now().Before(exp)
}
