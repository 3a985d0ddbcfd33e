package promsource

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// parsedMatcher is one label matcher of a parsed selector.
type parsedMatcher struct {
	label, op, value string
}

// parsedSelector is a PromQL range selector as a test reads it back from
// the wire: metric{matchers}[window].
type parsedSelector struct {
	metric   string
	matchers []parsedMatcher
	window   time.Duration
}

// parsePromQL reads the subset of PromQL the source may send, a range
// selector, by hand: a metric name, label matchers with any of the four
// operators and quoted values with escapes, and a duration. Anything else
// is an error, so a query of another shape fails the tests.
func parsePromQL(q string) (parsedSelector, error) {
	var out parsedSelector
	p := &promqlLexer{s: q}
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
	if !p.eat('[') {
		return out, p.errorf("want '[': a range selector")
	}
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
	if p.pos != len(p.s) {
		return out, p.errorf("trailing input")
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
