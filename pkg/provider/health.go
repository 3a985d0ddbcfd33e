package provider

import (
	"errors"
	"net/http"

	"k8s.io/apiserver/pkg/server/healthz"

	"github.com/wsscale/wsscale/pkg/provider/store"
)

// InformerSyncCheckName is the name of the readiness check of the caches,
// as /readyz?verbose lists it.
const InformerSyncCheckName = "informer-sync"

// ReadinessChecks returns the checks the adapter adds to the generic API
// server's /readyz: the pod and ReplicaSet caches hold a full list, and, when
// the values come from scraping (store not nil), the first scrape round is
// done. Until both pass the adapter's pod is not an endpoint of its Service,
// so a new replica never answers the HPA from an empty store.
func ReadinessChecks(synced func() bool, values *store.Store) []healthz.HealthChecker {
	checks := []healthz.HealthChecker{healthz.NamedCheck(InformerSyncCheckName, func(*http.Request) error {
		if !synced() {
			return errors.New("pod and ReplicaSet caches not synced yet")
		}
		return nil
	})}
	if values != nil {
		checks = append(checks, values.FirstRoundCheck())
	}
	return checks
}
