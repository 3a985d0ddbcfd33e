// Package exposition reads the Prometheus text exposition format (0.0.4) and
// OpenMetrics text (1.0.0) and keeps only the series a caller asked for.
//
// The adapter scrapes thousands of pods every few seconds and needs two or
// three numbers out of each response, so the parser never builds a metric
// family, never converts a name to a string and reuses every slice between
// calls: in steady state a Parse call does not allocate. Every line is still
// checked for syntax, so a body that is not an exposition (an HTML error
// page, a JSON document, random bytes) is rejected with the line that broke
// it instead of silently yielding nothing.
package exposition

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"unicode/utf8"
)

// Format is the wire format of a body.
type Format uint8

const (
	// FormatText is the Prometheus text exposition format 0.0.4.
	FormatText Format = iota
	// FormatOpenMetrics is OpenMetrics text 1.0.0: the body must end with
	// "# EOF" and sample timestamps are in seconds.
	FormatOpenMetrics
)

// String returns the media type of the format.
func (f Format) String() string {
	if f == FormatOpenMetrics {
		return "application/openmetrics-text"
	}
	return "text/plain"
}

// FormatFromContentType picks the format from a Content-Type header value.
// Anything that is not OpenMetrics is read as the text format, which is what
// Prometheus does with servers that send no or a wrong content type.
func FormatFromContentType(contentType string) Format {
	mediaType := contentType
	if i := strings.IndexByte(mediaType, ';'); i >= 0 {
		mediaType = mediaType[:i]
	}
	if strings.EqualFold(strings.TrimSpace(mediaType), "application/openmetrics-text") {
		return FormatOpenMetrics
	}
	return FormatText
}

// Label is one label name and its (unescaped) value.
type Label struct {
	Name  string
	Value string
}

// Selector names a wanted series: the sample name exactly as exposed (for
// example "websocket_connections_active", or "x_total" for an OpenMetrics
// counter) and labels that must be present with exactly these values.
// Labels that the selector does not mention may have any value.
type Selector struct {
	Name   string
	Labels []Label
}

// Sample is one exposed sample of a wanted series.
type Sample struct {
	// Value is the sample value as exposed; NaN and ±Inf are reported, not
	// rejected, so that the caller decides what it accepts.
	Value float64
	// TimestampMillis is the exposed timestamp in milliseconds since the
	// epoch; it is only meaningful when HasTimestamp is set.
	TimestampMillis int64
	// HasTimestamp tells whether the line carried a timestamp.
	HasTimestamp bool
	// Line is the 1-based line number of the sample in the body.
	Line int

	labelsStart, labelsEnd int // into Parser.labels
	labelsHash             uint64
}

// Errors that Parse wraps, for errors.Is.
var (
	// ErrSyntax marks a body that is not a valid exposition.
	ErrSyntax = errors.New("syntax error")
	// ErrDuplicateSeries marks a body that exposes the same wanted series
	// (same name and label set) more than once.
	ErrDuplicateSeries = errors.New("duplicate series")
)

// Error is a parse failure at a line of the body.
type Error struct {
	// Line is the 1-based line number.
	Line int
	// Reason says briefly what is wrong.
	Reason string
	// Kind is ErrSyntax or ErrDuplicateSeries.
	Kind error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Kind == ErrDuplicateSeries {
		return fmt.Sprintf("line %d: %v: %s", e.Line, e.Kind, e.Reason)
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// Unwrap returns the kind of error.
func (e *Error) Unwrap() error { return e.Kind }

// labelSpan locates one label of a sample line inside the body. Names and
// values are kept in their escaped form (without quotes); escaping is
// canonical in both formats, so equal labels have equal bytes.
type labelSpan struct {
	nameStart, nameEnd   int
	valueStart, valueEnd int
}

// Parser extracts the samples of a fixed set of selectors from expositions.
// A Parser is not safe for concurrent use; give each worker its own.
type Parser struct {
	selectors []Selector
	samples   [][]Sample
	index     []map[uint64]int // per selector, see findSame
	labels    []labelSpan
	body      []byte
	format    Format
	lines     int
	seed      maphash.Seed
}

// NewParser returns a parser for the given selectors. Samples are reported
// per selector, in the order the selectors are given.
func NewParser(selectors ...Selector) (*Parser, error) {
	var errs []error
	copied := make([]Selector, len(selectors))
	for i, s := range selectors {
		if s.Name == "" {
			errs = append(errs, fmt.Errorf("selector %d: empty metric name", i))
		} else if !utf8.ValidString(s.Name) {
			errs = append(errs, fmt.Errorf("selector %d: metric name %q is not valid UTF-8", i, s.Name))
		}
		seen := make(map[string]bool, len(s.Labels))
		for _, l := range s.Labels {
			if l.Name == "" || !utf8.ValidString(l.Name) || !utf8.ValidString(l.Value) {
				errs = append(errs, fmt.Errorf("selector %d (%s): invalid label %q=%q", i, s.Name, l.Name, l.Value))
			}
			if seen[l.Name] {
				errs = append(errs, fmt.Errorf("selector %d (%s): label %q given twice", i, s.Name, l.Name))
			}
			seen[l.Name] = true
		}
		copied[i] = Selector{Name: s.Name, Labels: append([]Label(nil), s.Labels...)}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Parser{
		selectors: copied,
		samples:   make([][]Sample, len(copied)),
		index:     make([]map[uint64]int, len(copied)),
		seed:      maphash.MakeSeed(),
	}, nil
}

// Reset forgets the results of the last Parse and drops the reference to its
// body, keeping the allocated capacity for the next call.
func (p *Parser) Reset() {
	for i := range p.samples {
		p.samples[i] = p.samples[i][:0]
		if len(p.index[i]) > 0 {
			clear(p.index[i])
		}
	}
	p.labels = p.labels[:0]
	p.body = nil
	p.lines = 0
}

// Samples returns the samples that matched selector i in the last Parse, in
// body order. The slice is reused by the next Parse or Reset.
func (p *Parser) Samples(i int) []Sample { return p.samples[i] }

// Lines returns the number of lines read by the last Parse.
func (p *Parser) Lines() int { return p.lines }

// LabelValue returns the value of the label name of sample s, in its escaped
// form (`\\`, `\"` and `\n` are not decoded). The bytes alias the body given
// to Parse and are valid until the next Parse or Reset.
func (p *Parser) LabelValue(s Sample, name string) ([]byte, bool) {
	for _, l := range p.labels[s.labelsStart:s.labelsEnd] {
		if escapedEqual(p.body[l.nameStart:l.nameEnd], name) {
			return p.body[l.valueStart:l.valueEnd], true
		}
	}
	return nil, false
}

// Parse reads body in the given format and records the samples of the wanted
// series. The body must not change until the next Parse or Reset, since the
// results refer into it. On error no samples are reported.
func (p *Parser) Parse(body []byte, format Format) error {
	p.Reset()
	p.body = body
	p.format = format
	err := p.parse()
	if err != nil {
		for i := range p.samples {
			p.samples[i] = p.samples[i][:0]
		}
		p.labels = p.labels[:0]
	}
	return err
}

func (p *Parser) parse() error {
	body := p.body
	eof := false
	for pos := 0; pos < len(body); {
		start := pos
		end := indexNewline(body[pos:])
		if end < 0 {
			end = len(body)
			pos = len(body)
		} else {
			end += pos
			pos = end + 1
		}
		p.lines++
		if end > start && body[end-1] == '\r' {
			end--
		}
		// Leading blanks are allowed, as in Prometheus' own parser.
		start = skipBlank(body[:end], start)
		line := body[start:end]
		if len(line) == 0 {
			continue
		}
		if eof {
			return p.syntax("content after # EOF")
		}
		var err error
		if line[0] == '#' {
			eof, err = p.parseComment(line)
		} else {
			err = p.parseSample(line, start)
		}
		if err != nil {
			return err
		}
	}
	if p.format == FormatOpenMetrics && !eof {
		p.lines++
		return p.syntax("missing # EOF at the end of an OpenMetrics body")
	}
	return nil
}

func (p *Parser) syntax(reason string) error {
	return &Error{Line: p.lines, Reason: reason, Kind: ErrSyntax}
}

// parseComment reads a line that starts with '#'. It reports whether the line
// is the OpenMetrics end marker.
func (p *Parser) parseComment(line []byte) (bool, error) {
	if len(line) < 2 || !isBlank(line[1]) {
		return false, nil // "#text": a plain comment
	}
	i := skipBlank(line, 1)
	k := i
	for k < len(line) && !isBlank(line[k]) {
		k++
	}
	keyword := line[i:k]
	if skipBlank(line, k) == len(line) {
		// "# EOF" ends an OpenMetrics body; in the text format it is an
		// ordinary comment. "# TYPE" alone is ignored, as by Prometheus.
		return p.format == FormatOpenMetrics && string(keyword) == "EOF", nil
	}
	switch string(keyword) {
	case "HELP":
		_, err := p.commentMetricName(line, k)
		return false, err // the docstring may hold anything
	case "UNIT":
		_, err := p.commentMetricName(line, k)
		return false, err
	case "TYPE":
		j, err := p.commentMetricName(line, k)
		if err != nil {
			return false, err
		}
		if j = skipBlank(line, j); j == len(line) {
			return false, nil // no type: Prometheus ignores the line too
		}
		t := j
		for t < len(line) && !isBlank(line[t]) {
			t++
		}
		if !knownType(line[j:t]) {
			return false, p.syntax(fmt.Sprintf("unknown metric type %q", truncate(line[j:t])))
		}
		if skipBlank(line, t) != len(line) {
			return false, p.syntax("unexpected text after the metric type")
		}
		return false, nil
	}
	return false, nil
}

// commentMetricName reads the metric name of a HELP, TYPE or UNIT line whose
// keyword ends at i, and returns the position after the name.
func (p *Parser) commentMetricName(line []byte, i int) (int, error) {
	if i >= len(line) || !isBlank(line[i]) {
		return 0, p.syntax("missing metric name after HELP, TYPE or UNIT")
	}
	i = skipBlank(line, i)
	if i < len(line) && line[i] == '"' {
		end, err := p.scanQuoted(line, i+1)
		if err != nil {
			return 0, err
		}
		if end == i+1 {
			return 0, p.syntax("empty metric name")
		}
		return end + 1, nil
	}
	if i >= len(line) || class[line[i]]&cNameStart == 0 {
		return 0, p.syntax("invalid metric name")
	}
	i++
	for i < len(line) && class[line[i]]&cName != 0 {
		i++
	}
	if i < len(line) && !isBlank(line[i]) {
		return 0, p.syntax("invalid character in metric name")
	}
	return i, nil
}

// metricTypes are the types of both formats; Prometheus' text parser also
// takes them in any case and spells gauge histograms with an underscore.
var metricTypes = [...]string{
	"counter", "gauge", "histogram", "summary", "untyped",
	"unknown", "gaugehistogram", "gauge_histogram", "stateset", "info",
}

func knownType(t []byte) bool {
	for _, known := range metricTypes {
		if bytes.EqualFold(t, []byte(known)) {
			return true
		}
	}
	return false
}

// parseSample reads a sample line; base is the line's offset in the body.
func (p *Parser) parseSample(line []byte, base int) error {
	n := len(line)
	i := 0
	nameStart, nameEnd := 0, 0
	quotedName := false
	if class[line[0]]&cNameStart != 0 {
		i = 1
		for i < n && class[line[i]]&cName != 0 {
			i++
		}
		nameEnd = i
		i = skipBlank(line, i)
	} else if line[0] != '{' {
		return p.syntax(fmt.Sprintf("invalid metric name starting with %q", truncate(line[:1])))
	}

	labelsStart := len(p.labels)
	if i < n && line[i] == '{' {
		var qs, qe int
		var err error
		i, qs, qe, err = p.parseLabels(line, i+1, base, nameEnd == 0)
		if err != nil {
			return err
		}
		if qe > 0 {
			nameStart, nameEnd, quotedName = qs, qe, true
		}
		if nameEnd == 0 {
			return p.syntax("missing metric name")
		}
		i = skipBlank(line, i)
	} else if nameEnd == i {
		if i < n {
			return p.syntax(fmt.Sprintf("invalid character %q after metric name", truncate(line[i:i+1])))
		}
		return p.syntax("missing value")
	}
	if i >= n {
		return p.syntax("missing value")
	}
	vs := i
	for i < n && !isBlank(line[i]) {
		i++
	}
	value, ok := parseFloat(line[vs:i])
	if !ok {
		return p.syntax(fmt.Sprintf("invalid value %q", truncate(line[vs:i])))
	}

	var ts int64
	hasTS := false
	i = skipBlank(line, i)
	if i < n && line[i] != '#' {
		ts0 := i
		for i < n && !isBlank(line[i]) {
			i++
		}
		if ts, ok = p.parseTimestamp(line[ts0:i]); !ok {
			return p.syntax(fmt.Sprintf("invalid timestamp %q", truncate(line[ts0:i])))
		}
		hasTS = true
		i = skipBlank(line, i)
	}
	if i < n {
		if line[i] != '#' {
			return p.syntax("unexpected text after the sample")
		}
		if err := p.parseExemplar(line, i+1, base); err != nil {
			return err
		}
	}

	name := line[nameStart:nameEnd]
	matched := false
	for si := range p.selectors {
		sel := &p.selectors[si]
		if quotedName {
			if !escapedEqual(name, sel.Name) {
				continue
			}
		} else if string(name) != sel.Name {
			continue
		}
		if !p.labelsMatch(sel.Labels, labelsStart) {
			continue
		}
		if !matched {
			if err := p.checkLabelNames(labelsStart); err != nil {
				return err
			}
		}
		matched = true
		s := Sample{
			Value:           value,
			TimestampMillis: ts,
			HasTimestamp:    hasTS,
			Line:            p.lines,
			labelsStart:     labelsStart,
			labelsEnd:       len(p.labels),
			labelsHash:      p.hashLabels(labelsStart, len(p.labels)),
		}
		if prev, dup := p.findSame(si, s); dup {
			return &Error{
				Line:   p.lines,
				Reason: fmt.Sprintf("%s also exposed at line %d", truncate(line[:max(0, vs-1)]), prev.Line),
				Kind:   ErrDuplicateSeries,
			}
		}
		p.samples[si] = append(p.samples[si], s)
	}
	if !matched {
		p.labels = p.labels[:labelsStart]
	}
	return nil
}

// parseLabels reads a label set starting after '{' and returns the position
// after '}'. When allowName is set, a quoted string standing alone as the
// first item is the metric name; its span is returned as [qs, qe).
func (p *Parser) parseLabels(line []byte, i, base int, allowName bool) (end, qs, qe int, err error) {
	n := len(line)
	first := true
	for {
		i = skipBlank(line, i)
		if i >= n {
			return 0, 0, 0, p.syntax("unterminated label set")
		}
		if line[i] == '}' {
			return i + 1, qs, qe, nil
		}
		var ns, ne int
		switch {
		case line[i] == '"':
			ns = i + 1
			if ne, err = p.scanQuoted(line, ns); err != nil {
				return 0, 0, 0, err
			}
			if ne == ns {
				return 0, 0, 0, p.syntax("empty label name")
			}
			i = ne + 1
		case class[line[i]]&cLabelStart != 0:
			ns = i
			i++
			for i < n && class[line[i]]&cLabel != 0 {
				i++
			}
			ne = i
		default:
			return 0, 0, 0, p.syntax(fmt.Sprintf("invalid label name starting with %q", truncate(line[i:i+1])))
		}
		i = skipBlank(line, i)
		// The name inside the braces should be quoted, but Prometheus
		// also reads {name} and so do we.
		if first && allowName && i < n && (line[i] == ',' || line[i] == '}') {
			qs, qe = ns, ne
		} else {
			if i >= n || line[i] != '=' {
				return 0, 0, 0, p.syntax("expected '=' after label name")
			}
			i = skipBlank(line, i+1)
			if i >= n || line[i] != '"' {
				return 0, 0, 0, p.syntax("expected '\"' to start a label value")
			}
			vs := i + 1
			ve, err := p.scanQuoted(line, vs)
			if err != nil {
				return 0, 0, 0, err
			}
			p.labels = append(p.labels, labelSpan{
				nameStart: base + ns, nameEnd: base + ne,
				valueStart: base + vs, valueEnd: base + ve,
			})
			i = skipBlank(line, ve+1)
		}
		first = false
		if i < n && line[i] == ',' {
			i++
			continue
		}
		if i < n && line[i] == '}' {
			return i + 1, qs, qe, nil
		}
		return 0, 0, 0, p.syntax("expected ',' or '}' in label set")
	}
}

// scanQuoted checks a quoted string whose content starts at i and returns the
// position of the closing quote.
func (p *Parser) scanQuoted(line []byte, i int) (int, error) {
	nonASCII := false
	start := i
	for i < len(line) {
		c := line[i]
		switch {
		case c == '"':
			if nonASCII && !utf8.Valid(line[start:i]) {
				return 0, p.syntax("invalid UTF-8 in quoted string")
			}
			return i, nil
		case c == '\\':
			if i+1 >= len(line) {
				return 0, p.syntax("unterminated escape sequence")
			}
			switch line[i+1] {
			case '\\', '"', 'n':
			default:
				return 0, p.syntax(fmt.Sprintf("invalid escape sequence %q", truncate(line[i:i+2])))
			}
			i += 2
		default:
			if c >= utf8.RuneSelf {
				nonASCII = true
			}
			i++
		}
	}
	return 0, p.syntax("unterminated quoted string")
}

// parseExemplar checks an OpenMetrics exemplar; i is the position after '#'.
func (p *Parser) parseExemplar(line []byte, i, base int) error {
	n := len(line)
	if i >= n || !isBlank(line[i]) {
		return p.syntax("expected space after '#' of an exemplar")
	}
	i = skipBlank(line, i)
	if i >= n || line[i] != '{' {
		return p.syntax("expected '{' to start the exemplar labels")
	}
	mark := len(p.labels)
	i, _, _, err := p.parseLabels(line, i+1, base, false)
	p.labels = p.labels[:mark]
	if err != nil {
		return err
	}
	i = skipBlank(line, i)
	vs := i
	for i < n && !isBlank(line[i]) {
		i++
	}
	if _, ok := parseFloat(line[vs:i]); !ok {
		return p.syntax(fmt.Sprintf("invalid exemplar value %q", truncate(line[vs:i])))
	}
	i = skipBlank(line, i)
	if i < n {
		ts := i
		for i < n && !isBlank(line[i]) {
			i++
		}
		if _, ok := parseFloat(line[ts:i]); !ok {
			return p.syntax(fmt.Sprintf("invalid exemplar timestamp %q", truncate(line[ts:i])))
		}
		if skipBlank(line, i) != n {
			return p.syntax("unexpected text after the exemplar")
		}
	}
	return nil
}

// parseTimestamp reads a sample timestamp: integer milliseconds in the text
// format, (possibly fractional) seconds in OpenMetrics.
func (p *Parser) parseTimestamp(b []byte) (int64, bool) {
	if p.format == FormatOpenMetrics {
		f, ok := parseFloat(b)
		if !ok || f != f || f > maxTimestampSeconds || f < -maxTimestampSeconds {
			return 0, false
		}
		return int64(f*1000 + copysignHalf(f)), true
	}
	return parseInt(b)
}

// maxTimestampSeconds keeps the conversion to milliseconds inside int64.
const maxTimestampSeconds = 9.2e15

func copysignHalf(f float64) float64 {
	if f < 0 {
		return -0.5
	}
	return 0.5
}

// labelsMatch reports whether the labels of the current line, which start at
// p.labels[from], include every wanted label with its value.
func (p *Parser) labelsMatch(want []Label, from int) bool {
	for _, w := range want {
		found := false
		for _, l := range p.labels[from:] {
			if escapedEqual(p.body[l.nameStart:l.nameEnd], w.Name) {
				found = escapedEqual(p.body[l.valueStart:l.valueEnd], w.Value)
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// checkLabelNames rejects a wanted sample with a label given twice, which
// would make the series ambiguous.
func (p *Parser) checkLabelNames(from int) error {
	ls := p.labels[from:]
	for i := 1; i < len(ls); i++ {
		for j := 0; j < i; j++ {
			if string(p.body[ls[i].nameStart:ls[i].nameEnd]) == string(p.body[ls[j].nameStart:ls[j].nameEnd]) {
				return p.syntax(fmt.Sprintf("label %q given twice", truncate(p.body[ls[i].nameStart:ls[i].nameEnd])))
			}
		}
	}
	return nil
}

// hashLabels returns a hash of a label set that does not depend on the order
// of its labels.
func (p *Parser) hashLabels(from, to int) uint64 {
	var sum uint64
	for _, l := range p.labels[from:to] {
		h := maphash.Bytes(p.seed, p.body[l.nameStart:l.nameEnd])
		h ^= maphash.Bytes(p.seed, p.body[l.valueStart:l.valueEnd]) * 0x9e3779b97f4a7c15
		sum += h * 0xbf58476d1ce4e5b9
	}
	return sum
}

// linearSearchLimit is the number of samples of a selector up to which
// duplicates are searched linearly; past it a hash index is used, so that a
// body with thousands of matching series costs linear, not quadratic, time.
const linearSearchLimit = 16

// findSame returns an earlier sample of selector si with the label set of s,
// and records s in the index when there is one.
func (p *Parser) findSame(si int, s Sample) (Sample, bool) {
	prev := p.samples[si]
	if len(prev) < linearSearchLimit {
		for _, q := range prev {
			if q.labelsHash == s.labelsHash && p.sameLabels(q, s) {
				return q, true
			}
		}
		return Sample{}, false
	}
	index := p.index[si]
	if index == nil {
		index = make(map[uint64]int, 4*linearSearchLimit)
		p.index[si] = index
	}
	if len(index) == 0 {
		for j, q := range prev {
			index[q.labelsHash] = j
		}
	}
	if j, ok := index[s.labelsHash]; ok {
		if p.sameLabels(prev[j], s) {
			return prev[j], true
		}
		// Two label sets with one hash: look at every sample.
		for _, q := range prev {
			if q.labelsHash == s.labelsHash && p.sameLabels(q, s) {
				return q, true
			}
		}
	}
	index[s.labelsHash] = len(prev)
	return Sample{}, false
}

// sameLabels reports whether two samples have the same label set.
func (p *Parser) sameLabels(a, b Sample) bool {
	la := p.labels[a.labelsStart:a.labelsEnd]
	lb := p.labels[b.labelsStart:b.labelsEnd]
	if len(la) != len(lb) {
		return false
	}
	for _, x := range la {
		found := false
		for _, y := range lb {
			if string(p.body[x.nameStart:x.nameEnd]) == string(p.body[y.nameStart:y.nameEnd]) {
				found = string(p.body[x.valueStart:x.valueEnd]) == string(p.body[y.valueStart:y.valueEnd])
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// truncate shortens b for an error message.
func truncate(b []byte) string {
	const limit = 40
	if len(b) > limit {
		return string(b[:limit]) + "…"
	}
	return string(b)
}
