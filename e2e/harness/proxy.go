package harness

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/volsd/volsd/internal/awsfake"
	"github.com/volsd/volsd/internal/lambdaruntime"
)

// Proxy is the AWS endpoint that the Lambdas, agents and CLI of the local
// run use (AWS_ENDPOINT_URL). It forwards to moto server what moto does
// well and answers itself, faithfully, what moto lacks: Auto Scaling
// lifecycle actions, SSM Run Command against the simulated instances, EBS
// volumes backed by loop devices, and injected faults. It tells services
// apart by the SigV4 credential scope, operations by the X-Amz-Target header
// (JSON protocols) or the Action form field (query protocols).
type Proxy struct {
	moto   *url.URL
	rp     *httputil.ReverseProxy
	client *http.Client
	log    *slog.Logger

	query map[string]map[string]queryHandler // service → Action → handler
	json  map[string]jsonHandler             // X-Amz-Target → handler

	Faults *Faults

	srv *http.Server
	url string

	mu    sync.Mutex
	calls map[string]int // "service:Operation" → requests seen
}

type queryHandler func(w http.ResponseWriter, r *http.Request, form url.Values, body []byte)
type jsonHandler = awsfake.Handler

// NewProxy makes a proxy in front of moto at motoURL.
func NewProxy(motoURL string, log *slog.Logger) (*Proxy, error) {
	u, err := url.Parse(motoURL)
	if err != nil {
		return nil, fmt.Errorf("moto endpoint %q: %w", motoURL, err)
	}
	p := &Proxy{
		moto:   u,
		rp:     httputil.NewSingleHostReverseProxy(u),
		client: &http.Client{Timeout: 2 * time.Minute},
		log:    log,
		query:  map[string]map[string]queryHandler{},
		json:   map[string]jsonHandler{},
		Faults: &Faults{},
		calls:  map[string]int{},
	}
	p.rp.FlushInterval = -1
	p.rp.ErrorLog = stdlog.New(io.Discard, "", 0)
	p.rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() == nil { // not just a caller that went away
			p.log.Warn("forward to moto failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		w.WriteHeader(http.StatusBadGateway)
	}
	return p, nil
}

// HandleQuery makes the proxy answer action of a query-protocol service
// (ec2, autoscaling) itself.
func (p *Proxy) HandleQuery(service, action string, h queryHandler) {
	if p.query[service] == nil {
		p.query[service] = map[string]queryHandler{}
	}
	p.query[service][action] = h
}

// HandleJSON makes the proxy answer the JSON-protocol operation target
// (for example "AmazonSSM.SendCommand") itself.
func (p *Proxy) HandleJSON(target string, h jsonHandler) { p.json[target] = h }

// Start serves on a free 127.0.0.1 port.
func (p *Proxy) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	p.url = "http://" + ln.Addr().String()
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return nil
}

// URL is the endpoint for AWS_ENDPOINT_URL.
func (p *Proxy) URL() string { return p.url }

// Close stops the server.
func (p *Proxy) Close() error {
	if p.srv == nil {
		return nil
	}
	return p.srv.Close()
}

// Calls returns how many requests the proxy saw for "service:Operation".
func (p *Proxy) Calls(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[op]
}

// CallCounts returns a copy of every counter.
func (p *Proxy) CallCounts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.calls))
	for k, v := range p.calls {
		out[k] = v
	}
	return out
}

// scopeRe finds the service in a SigV4 credential scope:
// Credential=AKID/20261121/us-east-1/ec2/aws4_request.
var scopeRe = regexp.MustCompile(`Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request`)

// serviceOf names the AWS service a request is for.
func serviceOf(r *http.Request) string {
	if m := scopeRe.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		return m[1]
	}
	if c := r.URL.Query().Get("X-Amz-Credential"); c != "" { // presigned
		if parts := strings.Split(c, "/"); len(parts) == 5 {
			return parts[3]
		}
	}
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		switch {
		case strings.HasPrefix(t, "AmazonSSM."):
			return "ssm"
		case strings.HasPrefix(t, "AmazonSQS."):
			return "sqs"
		}
	}
	return "s3"
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	svc := serviceOf(r)
	target := r.Header.Get("X-Amz-Target")
	isQuery := svc == "ec2" || svc == "autoscaling" || (svc != "s3" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded"))
	if svc == "s3" || (!isQuery && target == "") {
		p.count(svc + ":" + r.Method)
		if f := p.Faults.match(svc, r.Method); f != nil {
			writeS3Error(w, f.Status, f.Code, f.Message)
			return
		}
		p.rp.ServeHTTP(w, r) // streamed: S3 bodies can be large
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	if target != "" {
		op := target[strings.LastIndexByte(target, '.')+1:]
		p.count(svc + ":" + op)
		if f := p.Faults.match(svc, op); f != nil {
			awsfake.WriteJSONError(w, f.Status, f.Code, f.Message)
			return
		}
		if h := p.json[target]; h != nil {
			h(w, r, body)
			return
		}
		p.forwardTo(w, r, body)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, "malformed query body: "+err.Error(), http.StatusBadRequest)
		return
	}
	for k, v := range r.URL.Query() { // GET-style query requests
		if _, ok := form[k]; !ok {
			form[k] = v
		}
	}
	action := form.Get("Action")
	p.count(svc + ":" + action)
	if f := p.Faults.match(svc, action); f != nil {
		writeQueryProtocolError(w, svc, f.Status, f.Code, f.Message)
		return
	}
	if h := p.query[svc][action]; h != nil {
		h(w, r, form, body)
		return
	}
	p.forwardTo(w, r, body)
}

func (p *Proxy) count(op string) {
	p.mu.Lock()
	p.calls[op]++
	p.mu.Unlock()
}

// forwardTo passes the request on to moto unchanged.
func (p *Proxy) forwardTo(w http.ResponseWriter, r *http.Request, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	p.rp.ServeHTTP(w, r)
}

// Forwarded is moto's answer to a forwarded request.
type Forwarded struct {
	Status int
	Header http.Header
	Body   []byte
}

// forward sends the request (with body, possibly changed) to moto and
// returns its answer without writing it.
func (p *Proxy) forward(r *http.Request, body []byte) (*Forwarded, error) {
	u := *p.moto
	u.Path = r.URL.Path
	u.RawQuery = r.URL.RawQuery
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = r.Header.Clone()
	req.Header.Del("Content-Length")
	req.ContentLength = int64(len(body))
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &Forwarded{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// write copies a forwarded answer (with a possibly changed body) to w.
func (f *Forwarded) write(w http.ResponseWriter, body []byte) {
	for k, vs := range f.Header {
		if strings.EqualFold(k, "Content-Length") || strings.EqualFold(k, "X-Amz-Crc32") {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(f.Status)
	_, _ = w.Write(body)
}

// encodeForm re-encodes form values in a stable order.
func encodeForm(form url.Values) []byte { return []byte(form.Encode()) }

// ---- error shapes of the protocols ----

// writeQueryProtocolError writes an error in the shape the service's
// protocol uses.
func writeQueryProtocolError(w http.ResponseWriter, svc string, status int, code, msg string) {
	if svc == "ec2" {
		writeEC2Error(w, status, code, msg)
		return
	}
	awsfake.WriteQueryError(w, status, code, msg)
}

// writeEC2Error writes an EC2 (ec2query protocol) error.
func writeEC2Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>`,
		xmlEscape(code), xmlEscape(msg), lambdaruntime.NewRequestID())
}

// writeS3Error writes an S3 REST-XML error.
func writeS3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>%s</RequestId></Error>`,
		xmlEscape(code), xmlEscape(msg), lambdaruntime.NewRequestID())
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// ---- faults ----

// Fault makes the proxy answer an operation with an AWS error instead of
// serving it, Times times (0 = until removed).
type Fault struct {
	Service   string // "ec2", "autoscaling", "ssm", "s3" (Operation is the HTTP method), …
	Operation string // "AttachVolume"
	Code      string // "RequestLimitExceeded"
	Message   string
	Status    int // HTTP status
	Times     int

	hits int
}

// Faults is the list of injected faults.
type Faults struct {
	mu     sync.Mutex
	faults []*Fault
	hits   map[string]int
}

// Throttle makes the next n calls of service:operation fail with the
// service's throttling error.
func (fs *Faults) Throttle(service, operation string, n int) {
	code, msg, status := "ThrottlingException", "Rate exceeded", http.StatusBadRequest
	switch service {
	case "ec2":
		code, msg, status = "RequestLimitExceeded", "Request limit exceeded.", http.StatusServiceUnavailable
	case "autoscaling":
		code, msg = "Throttling", "Rate exceeded"
	case "s3":
		code, msg, status = "SlowDown", "Please reduce your request rate.", http.StatusServiceUnavailable
	}
	fs.Add(Fault{Service: service, Operation: operation, Code: code, Message: msg, Status: status, Times: n})
}

// Add installs a fault.
func (fs *Faults) Add(f Fault) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.faults = append(fs.faults, &f)
}

// Hits returns how many requests of service:operation a fault answered.
func (fs *Faults) Hits(service, operation string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.hits[service+":"+operation]
}

func (fs *Faults) match(service, operation string) *Fault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, f := range fs.faults {
		if f.Service != service || f.Operation != operation {
			continue
		}
		f.hits++
		if fs.hits == nil {
			fs.hits = map[string]int{}
		}
		fs.hits[service+":"+operation]++
		if f.Times > 0 && f.hits >= f.Times {
			fs.faults = append(fs.faults[:i], fs.faults[i+1:]...)
		}
		return f
	}
	return nil
}
