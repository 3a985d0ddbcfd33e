package exposition

import (
	"bytes"
	"strconv"
	"unsafe"
)

// Character classes of the legacy (unquoted) name syntax.
const (
	cNameStart  = 1 << iota // [a-zA-Z_:]
	cName                   // [a-zA-Z0-9_:]
	cLabelStart             // [a-zA-Z_]
	cLabel                  // [a-zA-Z0-9_]
)

var class = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		digit := c >= '0' && c <= '9'
		if letter || c == ':' {
			t[c] |= cNameStart | cName
		}
		if digit {
			t[c] |= cName | cLabel
		}
		if letter {
			t[c] |= cLabelStart | cLabel
		}
	}
	return t
}()

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

func skipBlank(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

func indexNewline(b []byte) int { return bytes.IndexByte(b, '\n') }

// parseFloat parses a sample value. Integers, by far the most common values,
// take a fast path; everything else goes to strconv through a string view of
// the bytes, which does not allocate when the value is valid.
func parseFloat(b []byte) (float64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	i := 0
	neg := false
	if b[0] == '-' || b[0] == '+' {
		neg = b[0] == '-'
		i = 1
	}
	if digits := len(b) - i; digits > 0 && digits <= 15 {
		var u uint64
		j := i
		for ; j < len(b); j++ {
			d := b[j] - '0'
			if d > 9 {
				break
			}
			u = u*10 + uint64(d)
		}
		if j == len(b) {
			f := float64(u) // exact: below 2^53
			if neg {
				f = -f
			}
			return f, true
		}
	}
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(b), len(b)), 64)
	return f, err == nil
}

// parseInt parses a base-10 int64 without allocating.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	i := 0
	neg := false
	if b[0] == '-' || b[0] == '+' {
		neg = b[0] == '-'
		i = 1
	}
	switch digits := len(b) - i; {
	case digits == 0:
		return 0, false
	case digits > 18: // up to 18 digits cannot overflow
		v, err := strconv.ParseInt(unsafe.String(unsafe.SliceData(b), len(b)), 10, 64)
		return v, err == nil
	}
	var v int64
	for ; i < len(b); i++ {
		d := b[i] - '0'
		if d > 9 {
			return 0, false
		}
		v = v*10 + int64(d)
	}
	if neg {
		v = -v
	}
	return v, true
}

// escapedEqual reports whether the escaped bytes of a quoted string (or an
// unquoted name, which holds no escapes) decode to want.
func escapedEqual(escaped []byte, want string) bool {
	if bytes.IndexByte(escaped, '\\') < 0 {
		return string(escaped) == want
	}
	j := 0
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		if c == '\\' && i+1 < len(escaped) {
			i++
			switch escaped[i] {
			case 'n':
				c = '\n'
			default:
				c = escaped[i]
			}
		}
		if j >= len(want) || want[j] != c {
			return false
		}
		j++
	}
	return j == len(want)
}
