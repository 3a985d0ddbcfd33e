package nodeagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// KubeletAPIOptions configure the node's kubelet API: the part of the kubelet's HTTPS server
// that kube-apiserver calls for `kubectl logs`.
type KubeletAPIOptions struct {
	// Port on NodeIP; 0 serves no kubelet API.
	Port int
	// CertFile and KeyFile are the serving certificate, for NodeIP.
	CertFile, KeyFile string
	// ClientCAFile verifies callers' client certificates (kube-apiserver's among them).
	ClientCAFile string
}

func (o KubeletAPIOptions) validate() []error {
	if o.Port == 0 {
		return nil
	}
	var errs []error
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("kubelet API port %d: must be in 1..65535", o.Port))
	}
	for name, f := range map[string]string{"certificate": o.CertFile, "key": o.KeyFile, "client CA": o.ClientCAFile} {
		if f == "" {
			errs = append(errs, fmt.Errorf("kubelet API %s file: required with a port", name))
		}
	}
	return errs
}

// followPoll is how often a followed log is checked for new output.
const followPoll = 100 * time.Millisecond

// kubeletAPI serves /containerLogs. Callers authenticate with a client certificate and are
// authorised with a SubjectAccessReview for the node's proxy subresource, as a kubelet
// authorises that path.
type kubeletAPI struct {
	nodeName string
	logDir   string
	client   kubernetes.Interface
	clock    clock.WithTicker
	// podUID finds the UID of the pod the node runs under namespace/name.
	podUID func(namespace, name string) (string, bool)
	// running reports whether a container process still writes to the log at path.
	running func(path string) bool
}

// serve listens on addr with TLS until ctx ends.
func (k *kubeletAPI) serve(ctx context.Context, addr string, o KubeletAPIOptions) error {
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return fmt.Errorf("kubelet API serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(o.ClientCAFile)
	if err != nil {
		return fmt.Errorf("kubelet API client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("kubelet API client CA %s: no certificate", o.ClientCAFile)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("kubelet API: %w", err)
	}
	srv := &http.Server{
		Handler:           k.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS12,
		},
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("kubelet API: %w", err)
	}
	return nil
}

func (k *kubeletAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", k.containerLogs)
	return k.authorize(mux)
}

// authorize lets a request through when its client certificate verified and a
// SubjectAccessReview allows its user the node's subresource for the path.
func (k *kubeletAPI) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		subject := r.TLS.VerifiedChains[0][0].Subject
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   subject.CommonName,
			Groups: subject.Organization,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: verbFor(r.Method), Resource: "nodes", Subresource: subresourceFor(r.URL.Path), Name: k.nodeName,
			},
		}}
		got, err := k.client.AuthorizationV1().SubjectAccessReviews().Create(r.Context(), review, metav1.CreateOptions{})
		if err != nil {
			http.Error(w, fmt.Sprintf("Authorization error (user=%s): %v", subject.CommonName, err), http.StatusInternalServerError)
			return
		}
		if !got.Status.Allowed {
			http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=nodes, subresource=%s)",
				subject.CommonName, review.Spec.ResourceAttributes.Verb, review.Spec.ResourceAttributes.Subresource), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// subresourceFor maps a kubelet API path to the node subresource that authorises it, as
// the kubelet does: the paths served here all fall under proxy.
func subresourceFor(path string) string {
	switch {
	case strings.HasPrefix(path, "/stats"):
		return "stats"
	case strings.HasPrefix(path, "/metrics"):
		return "metrics"
	case strings.HasPrefix(path, "/logs"):
		return "log"
	default:
		return "proxy"
	}
}

func verbFor(method string) string {
	switch method {
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	default:
		return "get"
	}
}

// logRequest is the part of the kubelet's log options the node agent honours.
type logRequest struct {
	follow     bool
	previous   bool
	tailLines  *int64
	limitBytes *int64
}

func parseLogRequest(q map[string][]string) (logRequest, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var req logRequest
	var errs []error
	for name, dst := range map[string]*bool{"follow": &req.follow, "previous": &req.previous} {
		if v := get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a boolean", name, v))
			}
			*dst = b
		}
	}
	for name, dst := range map[string]**int64{"tailLines": &req.tailLines, "limitBytes": &req.limitBytes} {
		if v := get(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				errs = append(errs, fmt.Errorf("%s=%q: not a non-negative integer", name, v))
				continue
			}
			*dst = &n
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return req, errors.Join(errs...)
}

// containerLogs answers GET /containerLogs/{namespace}/{pod}/{container}.
func (k *kubeletAPI) containerLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	req, err := parseLogRequest(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	path, err := k.logPath(ns, pod, container, req.previous)
	if err != nil {
		// As the kubelet: an unknown pod is 404; a container without the asked run is a bad
		// request, which kube-apiserver passes on with the message.
		code := http.StatusBadRequest
		if errors.Is(err, errPodNotFound) {
			code = http.StatusNotFound
		}
		http.Error(w, err.Error(), code)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()
	var out io.Writer = w
	if req.limitBytes != nil {
		out = &limitWriter{w: w, left: *req.limitBytes}
	}
	w.Header().Set("Content-Type", "text/plain")
	if req.tailLines != nil {
		if _, err := f.Seek(tailOffset(f, *req.tailLines), io.SeekStart); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	if !req.follow || req.previous {
		_, _ = io.Copy(out, f)
		return
	}
	k.follow(r.Context(), w, out, f, path)
}

// follow copies the log as it grows until its container stops, the limit is reached or
// the caller goes away.
func (k *kubeletAPI) follow(ctx context.Context, w http.ResponseWriter, out io.Writer, f *os.File, path string) {
	flusher, _ := w.(http.Flusher)
	ticker := k.clock.NewTicker(followPoll)
	defer ticker.Stop()
	for {
		// Whether it still runs is read before the copy, so that the last output is sent.
		running := k.running(path)
		if _, err := io.Copy(out, f); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		if lw, ok := out.(*limitWriter); (ok && lw.left <= 0) || !running {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
	}
}

// logPath finds the log of the container's current run, or of the run before it.
func (k *kubeletAPI) logPath(ns, pod, container string, previous bool) (string, error) {
	dir := ""
	if uid, ok := k.podUID(ns, pod); ok {
		dir = filepath.Join(k.logDir, fmt.Sprintf("%s_%s_%s", ns, pod, uid))
	} else {
		// Namespace and pod names have no underscore, so the prefix is unambiguous; of a pod
		// deleted and created again, the newest log directory is the current one.
		matches, _ := filepath.Glob(filepath.Join(k.logDir, fmt.Sprintf("%s_%s_*", ns, pod)))
		var newest time.Time
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.ModTime().After(newest) {
				dir, newest = m, st.ModTime()
			}
		}
	}
	if dir == "" {
		return "", fmt.Errorf("pod %s/%s: %w", ns, pod, errPodNotFound)
	}
	entries, err := os.ReadDir(filepath.Join(dir, container))
	if err != nil {
		return "", fmt.Errorf("container %q in pod %q has no logs on this node", container, pod)
	}
	runs := []int{}
	for _, e := range entries {
		if n, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".log")); err == nil && strings.HasSuffix(e.Name(), ".log") {
			runs = append(runs, n)
		}
	}
	sort.Ints(runs)
	switch {
	case len(runs) == 0:
		return "", fmt.Errorf("container %q in pod %q has not started", container, pod)
	case previous && len(runs) < 2:
		return "", fmt.Errorf("previous terminated container %q in pod %q not found", container, pod)
	case previous:
		return filepath.Join(dir, container, fmt.Sprintf("%d.log", runs[len(runs)-2])), nil
	default:
		return filepath.Join(dir, container, fmt.Sprintf("%d.log", runs[len(runs)-1])), nil
	}
}

// errPodNotFound is why a pod's logs cannot be found at all.
var errPodNotFound = errors.New("no such pod on this node")

// tailOffset returns where the last n lines of f begin (a last line without a newline
// counts as a line).
func tailOffset(f *os.File, n int64) int64 {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0
	}
	size := st.Size()
	const chunk = 32 << 10
	buf := make([]byte, chunk)
	newlines := int64(0)
	end := size
	// A final newline ends the last line; it does not start another.
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err == nil && last[0] == '\n' {
		end = size - 1
	}
	if n == 0 {
		return size
	}
	for pos := end; pos > 0; {
		start := max(pos-chunk, 0)
		b := buf[:pos-start]
		if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
			return 0
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] == '\n' {
				newlines++
				if newlines == n {
					return start + int64(i) + 1
				}
			}
		}
		pos = start
	}
	return 0
}

// limitWriter writes at most left bytes and then reports io.ErrShortWrite.
type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.ErrShortWrite
	}
	if int64(len(p)) > l.left {
		n, err := l.w.Write(p[:l.left])
		l.left -= int64(n)
		if err == nil {
			err = io.ErrShortWrite
		}
		return n, err
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

// runningLogs is the set of log files a container process is writing.
type runningLogs struct {
	mu    sync.Mutex
	paths map[string]bool
}

func (r *runningLogs) set(path string, running bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paths == nil {
		r.paths = map[string]bool{}
	}
	if running {
		r.paths[path] = true
	} else {
		delete(r.paths, path)
	}
}

func (r *runningLogs) running(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.paths[path]
}
