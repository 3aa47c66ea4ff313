package awsfake

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/aws/smithy-go"
)

// The HTTP front: the fakes' SDK-shaped methods served on the wire
// protocols the SDK speaks, so a process that only has an endpoint URL
// (a Lambda bootstrap, the agent, the CLI in the whole-system run) talks
// to the same model the unit tests call in-process. JSONOp serves the
// awsJson1.1 protocol (SSM: X-Amz-Target "AmazonSSM.<Op>"), QueryOp the
// awsquery protocol (Auto Scaling: Action=<Op> form posts).

// Handler answers one operation whose request body was already read.
type Handler func(w http.ResponseWriter, r *http.Request, body []byte)

// JSONOp serves call on the awsJson1.1 protocol: the body decodes into the
// SDK input struct, the output encodes with AWS's member names (timestamps
// as epoch seconds), an error becomes {"__type": code, "message": …} with
// 400 (client fault) or 500 (server fault).
func JSONOp[In, Out, Opt any](call func(context.Context, *In, ...func(*Opt)) (*Out, error)) Handler {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		in := new(In)
		if len(body) > 0 {
			if err := json.Unmarshal(body, in); err != nil {
				WriteJSONError(w, http.StatusBadRequest, "SerializationException", err.Error())
				return
			}
		}
		out, err := call(r.Context(), in)
		if err != nil {
			code, msg, status := apiFault(err)
			WriteJSONError(w, status, code, msg)
			return
		}
		b, err := json.Marshal(wireValue(reflect.ValueOf(out)))
		if err != nil {
			WriteJSONError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_, _ = w.Write(b)
	}
}

// QueryOp serves call on the awsquery protocol for inputs of flat members
// (strings, numbers, booleans, string lists as Member.N) and outputs
// without members, as Auto Scaling's lifecycle actions have; errors are
// the protocol's ErrorResponse with 400 or 500.
func QueryOp[In, Out, Opt any](action string, call func(context.Context, *In, ...func(*Opt)) (*Out, error)) Handler {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			WriteQueryError(w, http.StatusBadRequest, "MalformedQueryString", err.Error())
			return
		}
		in := new(In)
		if err := decodeForm(form, reflect.ValueOf(in).Elem()); err != nil {
			WriteQueryError(w, http.StatusBadRequest, "ValidationError", err.Error())
			return
		}
		if _, err := call(r.Context(), in); err != nil {
			code, msg, status := apiFault(err)
			WriteQueryError(w, status, code, msg)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		_, _ = fmt.Fprintf(w, `<%sResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><%sResult/><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>`,
			action, action, requestID(), action)
	}
}

// apiFault is an error's AWS code, message and HTTP status.
func apiFault(err error) (code, msg string, status int) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		status = http.StatusBadRequest
		if ae.ErrorFault() == smithy.FaultServer {
			status = http.StatusInternalServerError
		}
		return ae.ErrorCode(), ae.ErrorMessage(), status
	}
	return "InternalFailure", err.Error(), http.StatusInternalServerError
}

// WriteJSONError writes an awsJson1.1 error: {"__type": code, "message":
// msg} with status.
func WriteJSONError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", code)
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"__type": code, "message": msg})
	_, _ = w.Write(b)
}

// WriteQueryError writes an awsquery ErrorResponse (Sender below 500,
// Receiver from 500) with status.
func WriteQueryError(w http.ResponseWriter, status int, code, msg string) {
	typ := "Sender"
	if status >= 500 {
		typ = "Receiver"
	}
	var esc strings.Builder
	_ = xml.EscapeText(&esc, []byte(msg))
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
		typ, code, esc.String(), requestID())
}

func requestID() string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", time.Now().UnixNano()&0xffffffff, time.Now().UnixNano()&0xffffffffffff)
}

var timeType = reflect.TypeOf(time.Time{})

// wireValue turns an SDK struct into what its JSON looks like on the wire:
// exported members by their names, nil members left out, timestamps as
// epoch seconds, the SDK's own bookkeeping (ResultMetadata) dropped.
func wireValue(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return wireValue(v.Elem())
	case reflect.Struct:
		if v.Type() == timeType {
			return float64(v.Interface().(time.Time).UnixMilli()) / 1000
		}
		out := map[string]any{}
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() || f.Name == "ResultMetadata" {
				continue
			}
			fv := v.Field(i)
			if (fv.Kind() == reflect.Pointer || fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map || fv.Kind() == reflect.Interface) && fv.IsNil() {
				continue
			}
			out[f.Name] = wireValue(fv)
		}
		return out
	case reflect.Slice:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = wireValue(v.Index(i))
		}
		return out
	case reflect.Map:
		out := map[string]any{}
		for _, k := range v.MapKeys() {
			out[fmt.Sprint(k.Interface())] = wireValue(v.MapIndex(k))
		}
		return out
	default:
		return v.Interface()
	}
}

// decodeForm sets the flat members of the input struct v from a query
// form: *string, *int32, *bool and []string (Name.member.N).
func decodeForm(form url.Values, v reflect.Value) error {
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		switch {
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
			for n := 1; ; n++ {
				s, ok := form[f.Name+".member."+strconv.Itoa(n)]
				if !ok {
					break
				}
				fv.Set(reflect.Append(fv, reflect.ValueOf(s[0]).Convert(f.Type.Elem())))
			}
		case f.Type.Kind() == reflect.Pointer:
			s, ok := form[f.Name]
			if !ok {
				continue
			}
			p := reflect.New(f.Type.Elem())
			switch f.Type.Elem().Kind() {
			case reflect.String:
				p.Elem().SetString(s[0])
			case reflect.Int32, reflect.Int64:
				n, err := strconv.ParseInt(s[0], 10, 64)
				if err != nil {
					return fmt.Errorf("%s: %q is not a number", f.Name, s[0])
				}
				p.Elem().SetInt(n)
			case reflect.Bool:
				p.Elem().SetBool(s[0] == "true")
			default:
				return fmt.Errorf("%s: member type %s is not served by this front", f.Name, f.Type)
			}
			fv.Set(p)
		}
	}
	return nil
}
