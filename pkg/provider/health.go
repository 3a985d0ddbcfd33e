package provider

import (
	"errors"
	"fmt"
	"net/http"

	"k8s.io/apiserver/pkg/server/healthz"
)

// The names of the readiness checks, as /readyz?verbose lists them.
const (
	InformerSyncCheckName = "informer-sync"
	FirstRoundCheckName   = "first-scrape-round"
)

// ReadinessChecks returns the checks the adapter adds to the generic API
// server's /readyz: the pod and ReplicaSet caches hold a full list, and, when
// the values come from scraping (store not nil), the first scrape round is
// done. Until both pass the adapter's pod is not an endpoint of its Service,
// so a new replica never answers the HPA from an empty store.
func ReadinessChecks(synced func() bool, store *Store) []healthz.HealthChecker {
	checks := []healthz.HealthChecker{healthz.NamedCheck(InformerSyncCheckName, func(*http.Request) error {
		if !synced() {
			return errors.New("pod and ReplicaSet caches not synced yet")
		}
		return nil
	})}
	if store != nil {
		checks = append(checks, store.FirstRoundCheck())
	}
	return checks
}

// FirstRoundCheck is the readiness check of the first scrape round.
func (s *Store) FirstRoundCheck() healthz.HealthChecker {
	return healthz.NamedCheck(FirstRoundCheckName, func(*http.Request) error {
		done, waiting := s.FirstRoundDone()
		if !done {
			return fmt.Errorf("first scrape round not done: %d pods not scraped yet", waiting)
		}
		return nil
	})
}
