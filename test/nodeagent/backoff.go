package nodeagent

import "time"

// crashBackOff is the kubelet's restart back-off for one container: the first restart is
// immediate, then the delay starts at base and doubles up to max. A container that ran
// for at least twice max before ending starts over.
type crashBackOff struct {
	base, max time.Duration
	restarts  int
}

// next records a restart of a container that ran for ranFor and returns how long to wait
// before starting it again.
func (b *crashBackOff) next(ranFor time.Duration) time.Duration {
	if ranFor >= 2*b.max {
		b.restarts = 0
	}
	d := time.Duration(0)
	if b.restarts > 0 {
		d = b.base
		for i := 1; i < b.restarts && d < b.max; i++ {
			d *= 2
		}
		if d > b.max {
			d = b.max
		}
	}
	b.restarts++
	return d
}
