// Package e2e holds the end-to-end tests: each runs against a real local cluster (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and the node agent) shared by the package.
package e2e

import (
	"testing"

	"github.com/wsscale/wsscale/test/e2e/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }
