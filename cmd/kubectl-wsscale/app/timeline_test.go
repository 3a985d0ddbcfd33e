package app

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// svgElement is what the structural checks read of an SVG element.
type svgElement struct {
	Name  string
	Attrs map[string]string
	Text  string
}

// parseSVG returns every element of the document, failing t when it is not well-formed XML.
func parseSVG(t *testing.T, data []byte) []svgElement {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	var out []svgElement
	var stack []int
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v\n%s", err, data)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			e := svgElement{Name: tk.Name.Local, Attrs: map[string]string{}}
			for _, a := range tk.Attr {
				e.Attrs[a.Name.Local] = a.Value
			}
			out = append(out, e)
			stack = append(stack, len(out)-1)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				out[stack[len(stack)-1]].Text += string(tk)
			}
		}
	}
	return out
}

// TimelineStructure is what CheckTimeline found in an SVG.
type timelineStructure struct {
	pods     map[string]string // pod → its area's path data
	replicas string            // the step line's path data
	events   map[string]int    // event reason → markers
	labelled map[string]bool   // pods named in the picture
}

func readTimeline(t *testing.T, data []byte) timelineStructure {
	t.Helper()
	s := timelineStructure{pods: map[string]string{}, events: map[string]int{}, labelled: map[string]bool{}}
	for _, e := range parseSVG(t, data) {
		switch {
		case e.Name == "path" && e.Attrs["class"] == "pod":
			s.pods[e.Attrs["data-pod"]] = e.Attrs["d"]
		case e.Name == "path" && e.Attrs["class"] == "replicas":
			s.replicas = e.Attrs["d"]
		case e.Name == "g" && e.Attrs["class"] == "event":
			s.events[e.Attrs["data-reason"]]++
		case e.Name == "text" && (e.Attrs["class"] == "legend" || e.Attrs["class"] == "pod-label"):
			s.labelled[e.Attrs["data-pod"]] = true
		}
	}
	return s
}

func sampleTimeline() *Timeline {
	start := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	tl := &Timeline{Title: "demo/echo: connections per pod, replicas and scale decisions"}
	conns := map[string][]int64{
		"echo-7d9f-aaaaa": {0, 200, 400, 400, 400, 400, 400, 400, 400, 400},
		"echo-7d9f-bbbbb": {0, 150, 300, 300, 300, 300, 300, 300, 300, 300},
		"echo-7d9f-ccccc": {0, 10, 15, 15, 8, 0, -1, -1, -1, -1},
		"echo-7d9f-ddddd": {0, 5, 15, 15, 15, 15, 15, 6, 0, -1},
	}
	replicas := []int32{4, 4, 4, 4, 4, 3, 3, 3, 2, 2}
	for i := range 10 {
		s := Sample{Time: start.Add(time.Duration(i) * 5 * time.Second), Connections: map[string]int64{}, Draining: map[string]bool{}, Replicas: replicas[i], Ready: replicas[i]}
		for pod, v := range conns {
			if v[i] >= 0 {
				s.Connections[pod] = v[i]
			}
		}
		if i >= 3 && i <= 5 {
			s.Draining["echo-7d9f-ccccc"] = true
		}
		if i >= 6 && i <= 8 {
			s.Draining["echo-7d9f-ddddd"] = true
		}
		tl.Samples = append(tl.Samples, s)
	}
	tl.Markers = []Marker{
		{Time: start.Add(-500 * time.Millisecond), Kind: "scale", Label: "SuccessfulRescale", Detail: "New size: 3 (an Event time rounded down to the second)"},
		{Time: start.Add(-3 * time.Second), Kind: "scale", Label: "Before", Detail: "before the recording: not drawn"},
		{Time: start.Add(15 * time.Second), Kind: "drain", Label: "VictimsMarked", Detail: "scale-down 4→3: draining echo-7d9f-ccccc"},
		{Time: start.Add(25 * time.Second), Kind: "scale", Label: "Committed", Detail: "4→3"},
		{Time: start.Add(25500 * time.Millisecond), Kind: "scale", Label: "ScalingReplicaSet", Detail: "Scaled down replica set echo-7d9f to 3"},
		{Time: start.Add(26 * time.Second), Kind: "scale", Label: "StepComplete", Detail: "4→3"},
		{Time: start.Add(30 * time.Second), Kind: "drain", Label: "VictimsMarked", Detail: "scale-down 3→2"},
		{Time: start.Add(40 * time.Second), Kind: "scale", Label: "Committed", Detail: "3→2"},
		{Time: start.Add(time.Hour), Kind: "scale", Label: "Outside", Detail: "after the recording: not drawn"},
	}
	return tl
}

func TestTimelineSVGHasEverySeriesAndMarker(t *testing.T) {
	tl := sampleTimeline()
	var buf bytes.Buffer
	if err := tl.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	if path := os.Getenv("WSSCALE_TIMELINE_OUT"); path != "" { // to look at it
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := readTimeline(t, buf.Bytes())
	for _, pod := range []string{"echo-7d9f-aaaaa", "echo-7d9f-bbbbb", "echo-7d9f-ccccc", "echo-7d9f-ddddd"} {
		if s.pods[pod] == "" {
			t.Errorf("no area for pod %s", pod)
		}
		if !s.labelled[pod] {
			t.Errorf("pod %s is not named in the picture", pod)
		}
	}
	if len(s.pods) != 4 {
		t.Errorf("%d pod areas, want 4: %v", len(s.pods), s.pods)
	}
	// The step line: one move, then a horizontal and a vertical segment per later sample.
	if got := strings.Count(s.replicas, "H"); got != 9 || !strings.HasPrefix(s.replicas, "M") {
		t.Errorf("replica step line %q: want M then 9 H/V steps", s.replicas)
	}
	if s.events["VictimsMarked"] != 2 || s.events["Committed"] != 2 || s.events["SuccessfulRescale"] != 1 || s.events["Outside"] != 0 || s.events["Before"] != 0 {
		t.Errorf("event markers %v, want 2 VictimsMarked, 2 Committed, the SuccessfulRescale of the first second, none outside the recording", s.events)
	}
}

// TestTimelineStacksAreas checks that each band starts where the one below it ends: the top
// edge of the first pod's area is the bottom edge of the second's.
func TestTimelineStacksAreas(t *testing.T) {
	tl := sampleTimeline()
	var buf bytes.Buffer
	if err := tl.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	s := readTimeline(t, buf.Bytes())
	order := tl.podOrder()
	n := len(tl.Samples)
	for i := 1; i < len(order); i++ {
		lower, upper := points(t, s.pods[order[i-1]]), points(t, s.pods[order[i]])
		if len(lower) != 2*n || len(upper) != 2*n {
			t.Fatalf("areas of %d and %d points, want %d", len(lower), len(upper), 2*n)
		}
		for j := range n {
			top := lower[j]          // lower band's top edge, left to right
			bottom := upper[2*n-1-j] // upper band's bottom edge, right to left
			if top != bottom {
				t.Errorf("sample %d: %s ends at %v but %s starts at %v", j, order[i-1], top, order[i], bottom)
			}
		}
	}
}

func points(t *testing.T, d string) []string {
	t.Helper()
	var out []string
	for _, f := range strings.Fields(d) {
		if f == "Z" {
			continue
		}
		out = append(out, strings.TrimLeft(f, "ML"))
	}
	return out
}

func TestTimelineHTMLEmbedsTheSVG(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleTimeline().WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"<!DOCTYPE html>", "<svg ", "</svg>", "<td>VictimsMarked</td>", "scale-down 4→3: draining echo-7d9f-ccccc"} {
		if !strings.Contains(out, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

func TestTimelineWithoutSamples(t *testing.T) {
	if err := (&Timeline{}).WriteSVG(io.Discard); err == nil {
		t.Error("an empty timeline was drawn; want an error")
	}
}

func TestRecordOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		set      func(o *RecordOptions)
		args     []string
		contains []string
	}{
		{name: "defaults"},
		{name: "html", set: func(o *RecordOptions) { o.Output = "out/t.html" }},
		{name: "bad extension", set: func(o *RecordOptions) { o.Output = "t.png" }, contains: []string{`--output "t.png"`}},
		{name: "zero duration and interval", set: func(o *RecordOptions) { o.Duration, o.Interval = 0, 0 }, contains: []string{"--duration 0s", "--interval 0s"}},
		{name: "interval over duration", set: func(o *RecordOptions) { o.Duration, o.Interval = time.Second, time.Minute }, contains: []string{"longer than --duration"}},
		{name: "two targets", args: []string{"a", "b"}, contains: []string{"at most one TARGET"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewRecordOptions(nil, testStreams())
			if tc.set != nil {
				tc.set(o)
			}
			errs := o.Validate(tc.args)
			if len(errs) != len(tc.contains) {
				t.Fatalf("errors %v, want %d", errs, len(tc.contains))
			}
			msg := fmt.Sprint(errs)
			for _, c := range tc.contains {
				if !strings.Contains(msg, c) {
					t.Errorf("errors %v lack %q", errs, c)
				}
			}
		})
	}
}
