package promsource

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// parsedMatcher is one label matcher of a parsed selector.
type parsedMatcher struct {
	label, op, value string
}

// parsedSelector is a query as a test reads it back from the wire: a range
// selector metric{matchers}[window], or (window 0) the instant query of
// values and sample times,
// metric{matchers} or label_replace(timestamp(metric{matchers}), "<timeLabel>", "true", "", "").
type parsedSelector struct {
	metric    string
	matchers  []parsedMatcher
	window    time.Duration
	timeLabel string
}

// parsePromQL reads the subset of PromQL the source may send by hand: a
// metric name, label matchers with any of the four operators and quoted
// values with escapes, then a range or the union with the selector's sample
// times. Anything else is an error, so a query of another shape fails the
// tests.
func parsePromQL(q string) (parsedSelector, error) {
	p := &promqlLexer{s: q}
	out, err := p.selector()
	if err != nil {
		return out, err
	}
	if p.eat('[') {
		end := strings.IndexByte(p.s[p.pos:], ']')
		if end < 0 {
			return out, p.errorf("unterminated range")
		}
		d, err := model.ParseDuration(p.s[p.pos : p.pos+end])
		if err != nil {
			return out, p.errorf("range: %v", err)
		}
		out.window = time.Duration(d)
		p.pos += end + 1
	} else {
		if !p.literal(" or label_replace(timestamp(") {
			return out, p.errorf("want a range or the union with the sample times")
		}
		again, err := p.selector()
		if err != nil {
			return out, err
		}
		if !reflect.DeepEqual(again, out) {
			return out, p.errorf("the times' selector %+v differs from the values' %+v", again, out)
		}
		if !p.literal("), ") {
			return out, p.errorf("want '), '")
		}
		if out.timeLabel, err = p.quoted(); err != nil {
			return out, err
		}
		if !p.literal(`, "true", "", "")`) {
			return out, p.errorf(`want , "true", "", "")`)
		}
	}
	if p.pos != len(p.s) {
		return out, p.errorf("trailing input")
	}
	return out, nil
}

// literal consumes lit when the input continues with it.
func (p *promqlLexer) literal(lit string) bool {
	if strings.HasPrefix(p.s[p.pos:], lit) {
		p.pos += len(lit)
		return true
	}
	return false
}

// selector reads metric{matchers}.
func (p *promqlLexer) selector() (parsedSelector, error) {
	var out parsedSelector
	out.metric = p.ident()
	if !p.eat('{') {
		return out, p.errorf("want '{'")
	}
	for !p.eat('}') {
		label := p.ident()
		if label == "" {
			return out, p.errorf("want a label name")
		}
		op := ""
		for _, o := range []string{"=~", "!~", "!=", "="} {
			if strings.HasPrefix(p.s[p.pos:], o) {
				op = o
				p.pos += len(o)
				break
			}
		}
		if op == "" {
			return out, p.errorf("want a matcher operator")
		}
		value, err := p.quoted()
		if err != nil {
			return out, err
		}
		out.matchers = append(out.matchers, parsedMatcher{label: label, op: op, value: value})
		if !p.eat(',') && !strings.HasPrefix(p.s[p.pos:], "}") {
			return out, p.errorf("want ',' or '}'")
		}
	}
	return out, nil
}

type promqlLexer struct {
	s   string
	pos int
}

func (p *promqlLexer) errorf(format string, args ...any) error {
	return fmt.Errorf("promql %q at %d: %s", p.s, p.pos, fmt.Sprintf(format, args...))
}

func (p *promqlLexer) eat(c byte) bool {
	if p.pos < len(p.s) && p.s[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

func (p *promqlLexer) ident() string {
	start := p.pos
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || p.pos > start && c >= '0' && c <= '9' {
			p.pos++
			continue
		}
		break
	}
	return p.s[start:p.pos]
}

// quoted reads a double-quoted string with Go/PromQL escapes.
func (p *promqlLexer) quoted() (string, error) {
	if p.pos >= len(p.s) || p.s[p.pos] != '"' {
		return "", p.errorf("want a quoted value")
	}
	for end := p.pos + 1; end < len(p.s); end++ {
		switch p.s[end] {
		case '\\':
			end++
		case '"':
			v, err := strconv.Unquote(p.s[p.pos : end+1])
			if err != nil {
				return "", p.errorf("value: %v", err)
			}
			p.pos = end + 1
			return v, nil
		}
	}
	return "", p.errorf("unterminated value")
}
