package scrape

import (
	"time"
)

// PodKey identifies a scraped pod.
type PodKey struct {
	Namespace string
	Name      string
}

// String returns "namespace/name".
func (k PodKey) String() string { return k.Namespace + "/" + k.Name }

// Target is a pod and the URL of its metrics endpoint, e.g.
// http://10.0.3.7:9090/metrics.
type Target struct {
	Key PodKey
	URL string
}

// Value is the value of one series in a successful scrape. Series are
// judged one by one: a series that is absent or invalid has no value, and
// the others of the same scrape keep theirs.
type Value struct {
	// Value is the validated sample value; meaningful only when Present.
	Value float64
	// Present is true when the series was exposed once with a valid value.
	Present bool
	// Problem says why a series has no value: ReasonMissing,
	// ReasonInvalidValue or ReasonDuplicate; "" when Present.
	Problem Reason
}

// Sample is the outcome of a successful scrape.
type Sample struct {
	// Time is when the scrape started, by the scraper's clock. Timestamps in
	// the exposition are ignored: freshness is judged by when we looked.
	Time time.Time
	// Duration is how long the scrape took.
	Duration time.Duration
	// Values holds one entry per Config.Series, in the same order. The sink
	// owns the slice.
	Values []Value
}

// Reason classifies a failed scrape; it is meant as a metric label value,
// so the set is small and fixed.
type Reason string

// The reasons a scrape fails.
const (
	// ReasonTimeout: the scrape took longer than the timeout.
	ReasonTimeout Reason = "timeout"
	// ReasonConnection: the connection failed (refused, reset, closed early).
	ReasonConnection Reason = "connection"
	// ReasonHTTPStatus: the response status was not 200.
	ReasonHTTPStatus Reason = "http_status"
	// ReasonTooLarge: the body exceeded the size limit.
	ReasonTooLarge Reason = "too_large"
	// ReasonParse: the body is not a valid exposition.
	ReasonParse Reason = "parse"
	// ReasonDuplicate: the body exposes a wanted series (same name and
	// labels) twice, which fails the whole scrape; as a Value's Problem,
	// more than one sample matches the series' labels.
	ReasonDuplicate Reason = "duplicate"
)

// The reasons one series of a successful scrape has no value (Value.Problem).
const (
	// ReasonInvalidValue: the value broke its series' rule.
	ReasonInvalidValue Reason = "invalid_value"
	// ReasonMissing: the series was not exposed.
	ReasonMissing Reason = "missing"
)

// Reasons returns every Reason a whole scrape fails with, e.g. to
// initialise a counter per reason.
func Reasons() []Reason {
	return []Reason{
		ReasonTimeout, ReasonConnection, ReasonHTTPStatus, ReasonTooLarge,
		ReasonParse, ReasonDuplicate,
	}
}

// Failure is the outcome of a failed scrape.
type Failure struct {
	// Time is when the scrape started.
	Time time.Time
	// Duration is how long the scrape took until it failed.
	Duration time.Duration
	// Reason classifies the failure.
	Reason Reason
	// Err says what went wrong, for logs.
	Err error
}

// Sink receives the outcome of every scrape. Calls for one pod never overlap
// and follow the scrape order; calls for different pods are concurrent.
// Once Remove(key) has returned, no further call for key is made. A Sink
// must not call Set or Remove of the same Scraper synchronously.
type Sink interface {
	// Observe reports a successful scrape.
	Observe(key PodKey, sample Sample)
	// Fail reports a failed scrape.
	Fail(key PodKey, failure Failure)
}
