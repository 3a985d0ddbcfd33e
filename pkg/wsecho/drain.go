package wsecho

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// DrainAnnotation is the pod annotation that asks a server to drain; ScaleGuard sets it on the pods
// it is about to remove and the server sees it through a downward-API volume.
const DrainAnnotation = "wsscale.io/drain"

// minDrainStep keeps the drain loop from waking up more often than this when connections are many.
const minDrainStep = 5 * time.Millisecond

// drainer closes connections with 1001 spread evenly over a window.
type drainer struct {
	clock      clock.Clock
	window     time.Duration
	closeGrace time.Duration
}

// spread is the part of the window over which close frames are sent; the rest (the close grace, but
// at most a fifth of the window) is left for the last clients to answer their close frame.
func (d drainer) spread() time.Duration {
	return d.window - min(d.closeGrace, d.window/5)
}

// closeAt is the time offset at which the i-th of n connections gets its close frame.
func closeAt(i, n int, spread time.Duration) time.Duration {
	if n == 0 {
		return 0
	}
	return time.Duration(int64(spread) * int64(i) / int64(n))
}

// run starts sending every victim its close frame on schedule, without waiting for the frame to be
// written (closeGoingAway bounds that itself), then waits until idle is closed (all
// connections gone) or the window has passed, and then calls cutRest for whatever is left.
func (d drainer) run(victims []goingAwayCloser, idle <-chan struct{}, cutRest func()) {
	start := d.clock.Now()
	spread := d.spread()
	for i := 0; i < len(victims); {
		elapsed := d.clock.Since(start)
		for i < len(victims) && closeAt(i, len(victims), spread) <= elapsed {
			// A close frame can wait for a client that stopped reading (the write lock, a full
			// socket buffer); it must not delay the closes after it. Each one is bounded by its
			// own short deadline, so these goroutines end within that deadline.
			go victims[i].closeGoingAway()
			i++
		}
		if i == len(victims) {
			break
		}
		wait := closeAt(i, len(victims), spread) - elapsed
		if wait < minDrainStep {
			wait = minDrainStep
		}
		select {
		case <-d.clock.After(wait):
		case <-idle:
			// Everyone left on their own.
			return
		}
	}
	remaining := d.window - d.clock.Since(start)
	if remaining < 0 {
		remaining = 0
	}
	select {
	case <-idle:
	case <-d.clock.After(remaining):
		cutRest()
	}
}

// WatchAnnotations polls a downward-API annotations file and calls onDrain once, as soon as it holds
// wsscale.io/drain="true". It returns when that happened or ctx is done. Polling (rather than
// inotify) follows the kubelet's atomic symlink swaps without special cases. A missing or unreadable
// file is logged once and polled again: the volume may appear after the process starts.
func WatchAnnotations(ctx context.Context, path string, every time.Duration, clk clock.Clock, onDrain func()) {
	var lastErr string
	for {
		drain, err := drainRequested(path)
		switch {
		case err != nil:
			if msg := err.Error(); msg != lastErr {
				klog.ErrorS(err, "Cannot read the drain annotation; will retry", "path", path)
				lastErr = msg
			}
		case drain:
			klog.InfoS("Drain requested by pod annotation", "annotation", DrainAnnotation, "path", path)
			onDrain()
			return
		default:
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-clk.After(every):
		}
	}
}

func drainRequested(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("annotations file %s does not exist", path)
	}
	if err != nil {
		return false, fmt.Errorf("read annotations file: %w", err)
	}
	annotations, err := ParseDownwardAPIFile(data)
	if err != nil {
		return false, fmt.Errorf("annotations file %s: %w", path, err)
	}
	v, ok := annotations[DrainAnnotation]
	return ok && strings.EqualFold(strings.TrimSpace(v), "true"), nil
}

// ParseDownwardAPIFile parses the kubelet's downward-API format for labels and annotations: one
// `key="value"` per line, the value quoted as a Go string literal.
func ParseDownwardAPIFile(data []byte) (map[string]string, error) {
	out := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		key, quoted, ok := strings.Cut(text, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("line %d: want key=\"value\"", line)
		}
		value, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("line %d: value of %s is not a quoted string", line, key)
		}
		out[key] = value
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
