package nodeagent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

func readLink(t *testing.T, p string) string {
	t.Helper()
	s, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWriteAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	t0 := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	first := map[string]fileProjection{
		"labels":      {data: []byte(`app="echo"`), mode: 0o644},
		"annotations": {data: []byte(`wsscale.io/drain="false"`), mode: 0o644},
		"sub/dir/x":   {data: []byte("x"), mode: 0o600},
	}
	changed, err := writeAtomic(dir, first, t0)
	if err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	oldTS := readLink(t, filepath.Join(dir, dataDirName))
	if !strings.HasPrefix(oldTS, "..2026_11_25_17_00_00.") {
		t.Errorf("..data -> %q, want a timestamped directory", oldTS)
	}
	for name, target := range map[string]string{"labels": "..data/labels", "annotations": "..data/annotations", "sub": "..data/sub"} {
		if got := readLink(t, filepath.Join(dir, name)); got != target {
			t.Errorf("%s -> %q, want %q", name, got, target)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "sub/dir/x")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("sub/dir/x mode: %v %v", st, err)
	}

	// Unchanged content: no new version.
	if changed, err := writeAtomic(dir, first, t0.Add(time.Minute)); err != nil || changed {
		t.Fatalf("rewrite of same payload: changed=%v err=%v", changed, err)
	}

	// A reader that opened the file before the update keeps the old version; a new open
	// sees the new one; dropped names disappear; the old version directory is removed.
	held, err := os.Open(filepath.Join(dir, "annotations"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	second := map[string]fileProjection{
		"labels":      {data: []byte(`app="echo"`), mode: 0o644},
		"annotations": {data: []byte(`wsscale.io/drain="true"`), mode: 0o644},
	}
	if changed, err := writeAtomic(dir, second, t0.Add(2*time.Minute)); err != nil || !changed {
		t.Fatalf("update: changed=%v err=%v", changed, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "annotations")); string(got) != `wsscale.io/drain="true"` {
		t.Errorf("annotations after update = %q", got)
	}
	buf := make([]byte, 64)
	n, _ := held.Read(buf)
	if string(buf[:n]) != `wsscale.io/drain="false"` {
		t.Errorf("held reader saw %q", buf[:n])
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("dropped name sub still present: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, oldTS)); !os.IsNotExist(err) {
		t.Errorf("old version %s not removed: %v", oldTS, err)
	}
	if newTS := readLink(t, filepath.Join(dir, dataDirName)); newTS == oldTS || !strings.HasPrefix(newTS, "..2026_11_25_17_02_00.") {
		t.Errorf("..data -> %q after update", newTS)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 4 { // ..data, one version dir, labels, annotations
		t.Errorf("volume dir holds %v", names)
	}

	for _, bad := range []string{"/abs", "../x", "a/../b", "..data", ""} {
		if _, err := writeAtomic(dir, map[string]fileProjection{bad: {}}, t0); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
}

func TestPodVolumesSync(t *testing.T) {
	client := fake.NewClientset(
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "ns"}, Data: map[string]string{"ca.crt": "CA"}},
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "ns"}, Data: map[string]string{"a": "1", "b": "2"}, BinaryData: map[string][]byte{"bin": {0, 1}}},
		&v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "ns"}, Data: map[string][]byte{"tls.key": []byte("KEY")}},
	)
	var requests []*authenticationv1.TokenRequest
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC))
	client.PrependReactor("create", "serviceaccounts", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "token" {
			return false, nil, nil
		}
		req := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenRequest)
		requests = append(requests, req)
		return true, &authenticationv1.TokenRequest{Status: authenticationv1.TokenRequestStatus{
			Token: "token-" + string(rune('0'+len(requests))), ExpirationTimestamp: metav1.NewTime(clk.Now().Add(time.Hour)),
		}}, nil
	})
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid1", Labels: map[string]string{"app": "echo"}},
		Spec: v1.PodSpec{
			ServiceAccountName: "sa",
			Containers:         []v1.Container{{Name: "c"}},
			Volumes: []v1.Volume{
				{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "cfg-items", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
					LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Items: []v1.KeyToPath{{Key: "a", Path: "conf/a.txt", Mode: ptr.To[int32](0o600)}}}}},
				{Name: "sec", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "sec", DefaultMode: ptr.To[int32](0o400)}}},
				{Name: "opt", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "absent", Optional: ptr.To(true)}}},
				{Name: "podinfo", VolumeSource: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{Items: []v1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
				{Name: "api", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
					{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token", Audience: "wsscale", ExpirationSeconds: ptr.To[int64](3600)}},
					{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []v1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
					{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
				}}}},
				{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
			},
		},
	}
	dir := t.TempDir()
	vols := newPodVolumes(client, clk, dir, nil)
	ctx := context.Background()
	if err := vols.sync(ctx, pod, true); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"cfg/a": "1", "cfg/b": "2", "cfg/bin": "\x00\x01", "cfg-items/conf/a.txt": "1", "sec/tls.key": "KEY",
		"podinfo/labels": `app="echo"`, "api/token": "token-1", "api/ca.crt": "CA", "api/namespace": "ns",
	}
	check := func() {
		t.Helper()
		for p, want := range files {
			if got, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(got) != want {
				t.Errorf("%s = %q, %v; want %q", p, got, err, want)
			}
		}
	}
	check()
	for p, mode := range map[string]os.FileMode{"cfg-items/conf/a.txt": 0o600, "sec/tls.key": 0o400, "cfg/a": 0o644} {
		if st, err := os.Stat(filepath.Join(dir, p)); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v (%v)", p, st.Mode().Perm(), mode, err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "scratch")); err != nil || st.Mode().Perm() != 0o777 {
		t.Errorf("emptyDir: %v %v", st, err)
	}
	if len(requests) != 1 || requests[0].Spec.Audiences[0] != "wsscale" || *requests[0].Spec.ExpirationSeconds != 3600 ||
		requests[0].Spec.BoundObjectRef.Kind != "Pod" || requests[0].Spec.BoundObjectRef.UID != "uid1" {
		t.Errorf("token requests: %+v", requests)
	}

	// A label change updates the downward API file without fetching anything.
	pod.Labels["tier"] = "web"
	if err := vols.sync(ctx, pod, false); err != nil {
		t.Fatal(err)
	}
	files["podinfo/labels"] = "app=\"echo\"\ntier=\"web\""
	check()
	if len(requests) != 1 {
		t.Errorf("token requested again before it was due: %d", len(requests))
	}
	// At 80% of its lifetime the token is replaced.
	clk.Step(49 * time.Minute)
	if err := vols.sync(ctx, pod, true); err != nil {
		t.Fatal(err)
	}
	files["api/token"] = "token-2"
	check()

	pod.Spec.Volumes = append(pod.Spec.Volumes, v1.Volume{Name: "missing", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}}}},
		v1.Volume{Name: "nfs", VolumeSource: v1.VolumeSource{NFS: &v1.NFSVolumeSource{Server: "x", Path: "/"}}})
	err := vols.sync(ctx, pod, true)
	if err == nil || !strings.Contains(err.Error(), `volume "missing": configmap "nope" not found`) || !strings.Contains(err.Error(), `volume "nfs": volume type not supported`) {
		t.Errorf("sync with bad volumes: %v", err)
	}
}
