package store

import (
	"fmt"
	"net/http"

	"k8s.io/apiserver/pkg/server/healthz"
)

// FirstRoundCheckName is the name of the readiness check of the first
// scrape round, as /readyz?verbose lists it.
const FirstRoundCheckName = "first-scrape-round"

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
