package scrape

// targetQueue is a min-heap of targets by due time, for container/heap.
type targetQueue []*target

func (q targetQueue) Len() int           { return len(q) }
func (q targetQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }

func (q targetQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}

func (q *targetQueue) Push(x any) {
	t := x.(*target)
	t.index = len(*q)
	*q = append(*q, t)
}

func (q *targetQueue) Pop() any {
	old := *q
	n := len(old)
	t := old[n-1]
	old[n-1] = nil
	t.index = -1
	*q = old[:n-1]
	return t
}
