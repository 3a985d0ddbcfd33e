package app

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Timeline is what record sampled: connections per pod and replicas over time, and the scale
// and drain decisions as markers.
type Timeline struct {
	// Title names the workload.
	Title   string
	Samples []Sample
	Markers []Marker
}

// Sample is the state at one moment.
type Sample struct {
	Time time.Time
	// Connections per pod; a pod without a value is absent.
	Connections map[string]int64
	// Draining are the pods that carry the drain label.
	Draining map[string]bool
	// Replicas is the Deployment's spec.replicas; Ready its ready pods.
	Replicas, Ready int32
}

// Marker is a decision at one moment: a scale or a drain.
type Marker struct {
	Time time.Time
	// Kind is "scale" or "drain".
	Kind string
	// Label is the short text drawn at the marker (the Event's reason).
	Label string
	// Detail is the whole message (the SVG's tooltip).
	Detail string
}

// Plot geometry, in SVG user units.
const (
	plotWidth    = 1200
	plotHeight   = 560
	marginLeft   = 70
	marginRight  = 270 // replica axis and the pod list
	marginTop    = 110
	marginBottom = 50
)

// palette is a colour-blind-safe qualitative palette (Okabe–Ito and Tol), cycled per pod.
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#AA4499", "#882255"}

// podOrder returns the pods in the order they first appear (older pods at the bottom of the
// stack), ties by name.
func (t *Timeline) podOrder() []string {
	first := map[string]int{}
	for i, s := range t.Samples {
		for p := range s.Connections {
			if _, ok := first[p]; !ok {
				first[p] = i
			}
		}
	}
	pods := make([]string, 0, len(first))
	for p := range first {
		pods = append(pods, p)
	}
	sort.Slice(pods, func(i, j int) bool {
		if first[pods[i]] != first[pods[j]] {
			return first[pods[i]] < first[pods[j]]
		}
		return pods[i] < pods[j]
	})
	return pods
}

// WriteSVG draws the timeline: a stacked area of connections per pod (each band labelled where it
// is thickest), the replicas as a step line on the right axis, and the markers as vertical lines.
func (t *Timeline) WriteSVG(w io.Writer) error {
	if len(t.Samples) == 0 {
		return fmt.Errorf("no samples to draw")
	}
	pods := t.podOrder()
	start, end := t.Samples[0].Time, t.Samples[len(t.Samples)-1].Time
	span := end.Sub(start)
	if span <= 0 {
		span = time.Second
	}
	var maxTotal int64
	var maxReplicas int32
	for _, s := range t.Samples {
		var total int64
		for _, v := range s.Connections {
			total += v
		}
		maxTotal = max(maxTotal, total)
		maxReplicas = max(maxReplicas, s.Replicas, s.Ready)
	}
	yTop := niceCeil(float64(max(maxTotal, 1)))
	rTop := float64(max(maxReplicas+1, 2))
	pw, ph := float64(plotWidth-marginLeft-marginRight), float64(plotHeight-marginTop-marginBottom)
	x := func(at time.Time) float64 { return marginLeft + pw*float64(at.Sub(start))/float64(span) }
	y := func(v float64) float64 { return marginTop + ph*(1-v/yTop) }
	yr := func(v float64) float64 { return marginTop + ph*(1-v/rTop) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotWidth, plotHeight, plotWidth, plotHeight)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", marginLeft, esc(t.Title))
	fmt.Fprintf(&b, `<text x="%d" y="44" fill="#444">connections per pod (stacked, left axis) · replicas (black step line, right axis) · scale and drain decisions (dashed lines) · %s to %s UTC</text>`+"\n",
		marginLeft, start.UTC().Format("15:04:05"), end.UTC().Format("15:04:05"))

	// Grid and axes.
	b.WriteString(`<g class="axes" stroke="#ccc" stroke-width="1">` + "\n")
	for _, v := range ticks(yTop, 5) {
		fmt.Fprintf(&b, `<line x1="%d" x2="%.1f" y1="%.1f" y2="%.1f"/>`+"\n", marginLeft, marginLeft+pw, y(v), y(v))
	}
	b.WriteString("</g>\n")
	b.WriteString(`<g class="ticks" fill="#333">` + "\n")
	for _, v := range ticks(yTop, 5) {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%g</text>`+"\n", marginLeft-6, y(v), v)
	}
	for r := 0; r <= int(rTop); r++ {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" dominant-baseline="middle">%d</text>`+"\n", marginLeft+pw+6, yr(float64(r)), r)
	}
	for _, d := range timeTicks(span) {
		at := start.Add(d)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x(at), marginTop+ph+18, clock(d))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="middle" transform="rotate(-90 %d %.1f)">connections</text>`+"\n", 18, marginTop+ph/2, 18, marginTop+ph/2)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" transform="rotate(90 %.1f %.1f)">replicas</text>`+"\n", marginLeft+pw+30, marginTop+ph/2, marginLeft+pw+30, marginTop+ph/2)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">time since the start of the recording (mm:ss)</text>`+"\n", marginLeft+pw/2, plotHeight-8)
	b.WriteString("</g>\n")

	// Stacked areas: for each pod the band between the stack below it and below plus its value.
	below := make([]float64, len(t.Samples))
	b.WriteString(`<g class="pods">` + "\n")
	type label struct {
		pod        string
		x, y, size float64
		color      string
	}
	var labels []label
	for i, pod := range pods {
		color := palette[i%len(palette)]
		top := make([]float64, len(t.Samples))
		best := label{pod: pod, color: color}
		for j, s := range t.Samples {
			top[j] = below[j] + float64(s.Connections[pod])
			if th := y(below[j]) - y(top[j]); th > best.size {
				best.size, best.x, best.y = th, x(s.Time), (y(below[j])+y(top[j]))/2
			}
		}
		var d strings.Builder
		for j, s := range t.Samples {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f,%.1f ", cmd, x(s.Time), y(top[j]))
		}
		for j := len(t.Samples) - 1; j >= 0; j-- {
			fmt.Fprintf(&d, "L%.1f,%.1f ", x(t.Samples[j].Time), y(below[j]))
		}
		d.WriteString("Z")
		var peak int64
		for _, s := range t.Samples {
			peak = max(peak, s.Connections[pod])
		}
		fmt.Fprintf(&b, `<path class="pod" data-pod="%s" d="%s" fill="%s" fill-opacity="0.75" stroke="%s" stroke-width="0.8"><title>%s: up to %d connections</title></path>`+"\n",
			esc(pod), d.String(), color, color, esc(pod), peak)
		// Draining stretches of the pod: hatched over its band.
		for j := 0; j+1 < len(t.Samples); j++ {
			if t.Samples[j].Draining[pod] && top[j] > below[j] {
				fmt.Fprintf(&b, `<rect class="draining" data-pod="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="url(#hatch)"/>`+"\n",
					esc(pod), x(t.Samples[j].Time), y(top[j]), max(x(t.Samples[j+1].Time)-x(t.Samples[j].Time), 0.5), max(y(below[j])-y(top[j]), 0.5))
			}
		}
		copy(below, top)
		labels = append(labels, best)
	}
	b.WriteString("</g>\n")
	b.WriteString(`<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#000" stroke-opacity="0.35" stroke-width="2"/></pattern></defs>` + "\n")

	// Replicas: a step line (the value holds until the next sample).
	var d strings.Builder
	for j, s := range t.Samples {
		if j == 0 {
			fmt.Fprintf(&d, "M%.1f,%.1f ", x(s.Time), yr(float64(s.Replicas)))
			continue
		}
		fmt.Fprintf(&d, "H%.1f V%.1f ", x(s.Time), yr(float64(s.Replicas)))
	}
	fmt.Fprintf(&b, `<path class="replicas" data-series="replicas" d="%s" fill="none" stroke="#000" stroke-width="2.5"><title>Deployment spec.replicas</title></path>`+"\n", d.String())
	last := t.Samples[len(t.Samples)-1]
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-weight="bold" text-anchor="end">replicas %d</text>`+"\n", marginLeft+pw-4, yr(float64(last.Replicas))-6, last.Replicas)

	// Markers: each label goes on the lowest of the rows above the plot where it does not overlap
	// the one before it.
	b.WriteString(`<g class="markers">` + "\n")
	const rows = 4
	var rowEnd [rows]float64
	for i := range rowEnd {
		rowEnd[i] = math.Inf(-1)
	}
	for _, m := range t.Markers {
		// Event times are whole seconds (core/v1 lastTimestamp): one that rounds down to just
		// before the first sample is drawn at the start.
		if m.Time.Before(start.Add(-time.Second)) || m.Time.After(end) {
			continue
		}
		color := "#b00020"
		if m.Kind == "scale" {
			color = "#1a237e"
		}
		mx := x(maxTime(m.Time, start))
		half := textWidth(m.Label) / 2
		row := 0
		for row < rows-1 && rowEnd[row] > mx-half {
			row++
		}
		rowEnd[row] = mx + half + 4
		ty := float64(marginTop) - 8 - float64(row)*13
		fmt.Fprintf(&b, `<g class="event" data-kind="%s" data-reason="%s"><line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5" stroke-dasharray="5,3"/><circle cx="%.1f" cy="%d" r="4" fill="%s"/><text x="%.1f" y="%.1f" fill="%s" text-anchor="middle" font-size="11">%s</text><title>%s %s: %s</title></g>`+"\n",
			esc(m.Kind), esc(m.Label), mx, mx, ty+3, marginTop+ph, color, mx, marginTop, color, mx, ty, color, esc(m.Label),
			m.Time.UTC().Format("15:04:05"), esc(m.Label), esc(m.Detail))
	}
	b.WriteString("</g>\n")

	// Pod labels: on the band where it is thick enough, and in a list on the right in stack order
	// (top first), so that no colour needs looking up.
	b.WriteString(`<g class="labels">` + "\n")
	for _, l := range labels {
		if l.size >= 14 {
			name := shortPod(l.pod)
			w := textWidth(name)
			fmt.Fprintf(&b, `<text class="pod-label" data-pod="%s" x="%.1f" y="%.1f" dominant-baseline="middle" fill="#000" font-weight="bold">%s</text>`+"\n",
				esc(l.pod), clamp(l.x-w/2, marginLeft+6, marginLeft+pw-w-6), l.y, esc(name))
		}
	}
	for i := range labels {
		l := labels[len(labels)-1-i]
		ly := float64(marginTop) + 8 + float64(i)*16
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="10" height="10" fill="%s"/><text class="legend" data-pod="%s" x="%.1f" y="%.1f" dominant-baseline="middle">%s</text>`+"\n",
			marginLeft+pw+50, ly-5, l.color, esc(l.pod), marginLeft+pw+64, ly, esc(shortPod(l.pod)))
	}
	b.WriteString("</g>\n</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteHTML writes a page with the SVG and the list of markers.
func (t *Timeline) WriteHTML(w io.Writer) error {
	var svg strings.Builder
	if err := t.WriteSVG(&svg); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>\n<body style=\"font-family:sans-serif\">\n", esc(t.Title))
	b.WriteString(svg.String())
	b.WriteString("<h3>Decisions</h3>\n<table class=\"markers\" border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">\n<tr><th>time (UTC)</th><th>kind</th><th>reason</th><th>message</th></tr>\n")
	for _, m := range t.Markers {
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n", m.Time.UTC().Format("15:04:05"), esc(m.Kind), esc(m.Label), esc(m.Detail))
	}
	b.WriteString("</table>\n</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func esc(s string) string { return html.EscapeString(s) }

// shortPod keeps the end of a long pod name: the ReplicaSet hash and the pod suffix tell pods
// apart.
func shortPod(p string) string {
	if len(p) <= 28 {
		return p
	}
	return "…" + p[len(p)-26:]
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// textWidth estimates the width of s at the picture's 12-unit font (bold labels included).
func textWidth(s string) float64 { return 7.2 * float64(len([]rune(s))) }

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// ticks are about n round values from 0 to top.
func ticks(top float64, n int) []float64 {
	step := niceCeil(top / float64(n))
	var out []float64
	for v := 0.0; v <= top+step/1e6; v += step {
		out = append(out, v)
	}
	return out
}

// timeTicks are round offsets over span, about eight of them.
func timeTicks(span time.Duration) []time.Duration {
	steps := []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour}
	step := steps[len(steps)-1]
	for _, s := range steps {
		if span/s <= 8 {
			step = s
			break
		}
	}
	var out []time.Duration
	for d := time.Duration(0); d <= span; d += step {
		out = append(out, d)
	}
	return out
}

func clock(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
