package policy

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// TestSelector: status.selector must parse the way the scale client parses a Scale's selector
// (metav1.ParseToLabelSelector: the HPA and `kubectl scale` go through it), and leave out the
// draining pods.
func TestSelector(t *testing.T) {
	tests := []struct {
		name, target string
		pod          labels.Set
		want         bool
	}{
		{name: "a serving pod", target: "app=echo", pod: labels.Set{"app": "echo"}, want: true},
		{name: "a draining pod", target: "app=echo", pod: labels.Set{"app": "echo", "wsscale.io/drain": "true"}, want: false},
		{name: "a pod of another app", target: "app=echo", pod: labels.Set{"app": "other"}, want: false},
		{name: "expressions in the target selector", target: "app=echo,tier in (edge,ws)", pod: labels.Set{"app": "echo", "tier": "ws"}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Selector(tt.target)
			ls, err := metav1.ParseToLabelSelector(s)
			if err != nil {
				t.Fatalf("Selector(%q) = %q: the scale client cannot parse it: %v", tt.target, s, err)
			}
			sel, err := metav1.LabelSelectorAsSelector(ls)
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Matches(tt.pod); got != tt.want {
				t.Errorf("%q matches %v = %v, want %v", s, tt.pod, got, tt.want)
			}
		})
	}
}
