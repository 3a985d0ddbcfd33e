package wsecho

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// DrainLabel is the pod label that asks a server to drain: ScaleGuard sets it to "true" on the pods it
// is about to remove and removes it to release them. The server sees it through a downward-API volume
// of metadata.labels, drains while it is "true" and serves again once it is gone.
const DrainLabel = "wsscale.io/drain"

// DrainAnnotation is the same marker as a pod annotation, for setups that watch a downward-API file
// of metadata.annotations instead; it has the same meaning as DrainLabel.
const DrainAnnotation = DrainLabel

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
//
// Closing stop abandons the drain: no further close frames, nothing cut.
func (d drainer) run(victims []goingAwayCloser, idle, stop <-chan struct{}, cutRest func()) {
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
		case <-stop:
			return
		}
	}
	remaining := d.window - d.clock.Since(start)
	if remaining < 0 {
		remaining = 0
	}
	select {
	case <-idle:
	case <-stop:
	case <-d.clock.After(remaining):
		cutRest()
	}
}

// WatchDrainFiles polls downward-API files (metadata.labels, metadata.annotations) and calls
// setDrain(true) when one of them starts to hold wsscale.io/drain="true", and setDrain(false) when none
// holds it any more. It starts from "not draining" and returns when ctx is done. Polling (rather than
// inotify) follows the kubelet's atomic symlink swaps without special cases. A file that is missing
// or unreadable keeps its last state and is polled again (the volume may appear after the process
// starts); the error is logged once.
func WatchDrainFiles(ctx context.Context, paths []string, every time.Duration, clk clock.Clock, setDrain func(bool)) {
	marked := make([]bool, len(paths))    // the last state read from each file
	lastErr := make([]string, len(paths)) // the last error logged for each file
	draining := false
	for {
		for i, path := range paths {
			drain, err := drainRequested(path)
			if err != nil {
				if msg := err.Error(); msg != lastErr[i] {
					klog.ErrorS(err, "Cannot read the drain marker; will retry", "path", path)
					lastErr[i] = msg
				}
				continue
			}
			lastErr[i] = ""
			marked[i] = drain
		}
		if now := slices.Contains(marked, true); now != draining {
			draining = now
			if now {
				klog.InfoS("Drain requested by the pod's drain marker", "key", DrainLabel, "paths", paths)
			} else {
				klog.InfoS("Drain marker removed", "key", DrainLabel, "paths", paths)
			}
			setDrain(now)
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
		return false, fmt.Errorf("downward-API file %s does not exist", path)
	}
	if err != nil {
		return false, fmt.Errorf("read downward-API file: %w", err)
	}
	entries, err := ParseDownwardAPIFile(data)
	if err != nil {
		return false, fmt.Errorf("downward-API file %s: %w", path, err)
	}
	v, ok := entries[DrainLabel]
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
