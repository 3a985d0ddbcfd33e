package wsecho

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// OriginPolicy decides which browser origins may open a WebSocket.
//
// The zero value is the default policy: requests without an Origin header (non-browser clients:
// load balancers' health checks, backends, CLI tools) and same-origin requests (Origin host equals
// the Host header) are accepted; every other origin is refused. A browser page on another site can
// therefore not ride a user's cookies into this server (cross-site WebSocket hijacking) unless the
// operator lists that site. "*" accepts every origin and must be asked for explicitly.
type OriginPolicy struct {
	any      bool
	exact    map[string]struct{} // "scheme://host[:port]", lower case
	suffixes []originSuffix      // "scheme://*.example.com"
}

type originSuffix struct {
	scheme string
	suffix string // ".example.com" or ".example.com:8443"
}

// ParseOriginPolicy parses a comma-separated allow-list such as
// "https://chat.example.com,https://*.example.org,http://localhost:3000" or "*".
// Empty entries are ignored; an empty list gives the default same-origin policy.
func ParseOriginPolicy(list string) (OriginPolicy, error) {
	var p OriginPolicy
	for _, raw := range strings.Split(list, ",") {
		entry := strings.ToLower(strings.TrimSpace(raw))
		if entry == "" {
			continue
		}
		if entry == "*" {
			p.any = true
			continue
		}
		u, err := url.Parse(entry)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return OriginPolicy{}, fmt.Errorf("origin %q: want scheme://host[:port], e.g. https://app.example.com", raw)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return OriginPolicy{}, fmt.Errorf("origin %q: scheme must be http or https", raw)
		}
		if strings.HasPrefix(u.Host, "*.") {
			p.suffixes = append(p.suffixes, originSuffix{scheme: u.Scheme, suffix: u.Host[1:]})
			continue
		}
		if strings.Contains(u.Host, "*") {
			return OriginPolicy{}, fmt.Errorf("origin %q: a wildcard is only allowed as the first label (*.example.com)", raw)
		}
		if p.exact == nil {
			p.exact = make(map[string]struct{})
		}
		p.exact[u.Scheme+"://"+u.Host] = struct{}{}
	}
	return p, nil
}

// Allowed reports whether the request's origin may open a WebSocket.
func (p OriginPolicy) Allowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || p.any {
		return true
	}
	u, err := url.Parse(strings.ToLower(origin))
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	if _, ok := p.exact[u.Scheme+"://"+u.Host]; ok {
		return true
	}
	for _, s := range p.suffixes {
		if u.Scheme == s.scheme && strings.HasSuffix(u.Host, s.suffix) {
			return true
		}
	}
	return false
}
