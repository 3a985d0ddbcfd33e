// Package e2e holds the end-to-end tests: each runs against a real local cluster (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and the node agent) shared by the package.
package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

func TestMain(m *testing.M) { framework.Main(m, hpaSyncFromEnv) }

// hpaSyncFromEnv sets the HPA controller's sync period from WSSCALE_E2E_HPA_SYNC_PERIOD (the
// scale race runs with Kubernetes' default, 15s; the tests keep the cluster's faster default).
func hpaSyncFromEnv(o *localcluster.Options) {
	v := os.Getenv("WSSCALE_E2E_HPA_SYNC_PERIOD")
	if v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		fmt.Fprintf(os.Stderr, "WSSCALE_E2E_HPA_SYNC_PERIOD=%q is not a positive duration\n", v)
		os.Exit(2)
	}
	o.HPASyncPeriod = d
}
