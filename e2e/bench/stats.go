package bench

import (
	"math"
	"sort"
	"strconv"
	"time"
)

// Num is a number in the JSON report: rounded to 4 decimals, and null
// when it could not be measured (NaN).
type Num float64

// MarshalJSON writes n rounded, or null for NaN and infinities.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return []byte(strconv.FormatFloat(math.Round(f*1e4)/1e4, 'f', -1, 64)), nil
}

// UnmarshalJSON reads a number or null (NaN).
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Num(math.NaN())
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	*n = Num(f)
	return err
}

// Sample is one measured quantity over several runs: every value, and
// the median the report quotes (machines here are noisy).
type Sample struct {
	Unit   string    `json:"unit"`
	Median Num       `json:"median"`
	Min    Num       `json:"min"`
	Max    Num       `json:"max"`
	Values []float64 `json:"values"`
}

// NewSample summarizes values measured in unit.
func NewSample(unit string, values []float64) Sample {
	s := Sample{Unit: unit, Values: make([]float64, len(values))}
	for i, v := range values {
		s.Values[i] = math.Round(v*1e4) / 1e4
	}
	if len(values) == 0 {
		s.Median, s.Min, s.Max = Num(math.NaN()), Num(math.NaN()), Num(math.NaN())
		return s
	}
	s.Median = Num(Median(values))
	lo, hi := values[0], values[0]
	for _, v := range values {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	s.Min, s.Max = Num(lo), Num(hi)
	return s
}

// Seconds summarizes durations in seconds.
func Seconds(ds []time.Duration) Sample {
	vs := make([]float64, len(ds))
	for i, d := range ds {
		vs[i] = d.Seconds()
	}
	return NewSample("s", vs)
}

// Millis summarizes durations in milliseconds.
func Millis(ds []time.Duration) Sample {
	vs := make([]float64, len(ds))
	for i, d := range ds {
		vs[i] = float64(d.Microseconds()) / 1000
	}
	return NewSample("ms", vs)
}

// Counts summarizes integer counts.
func Counts(ns []int) Sample {
	vs := make([]float64, len(ns))
	for i, n := range ns {
		vs[i] = float64(n)
	}
	return NewSample("count", vs)
}

// Median is the middle value (the mean of the two middle ones for an even
// count); NaN for none.
func Median(values []float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), values...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Ratio is a/b, NaN when b is not positive.
func Ratio(a, b float64) float64 {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

func itoa(n int) string { return strconv.Itoa(n) }
