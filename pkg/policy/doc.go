// Package policy decides the ScaleGuard's scale-downs: which pods go (victims), how many clients
// a step may disconnect (the rolling disconnect budget), when a step may commit, and what blocks.
//
// Everything here is a pure function of plain facts (the guard's spec and status, the target
// Deployment, its pods with their connection counts, and the time), so it is table-tested without
// a cluster; the controller (package policy/controller) gathers the facts and carries out the
// decisions.
package policy
