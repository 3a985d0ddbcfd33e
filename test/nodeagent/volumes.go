package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

const (
	defaultVolumeMode          = fs.FileMode(0o644)
	defaultTokenExpiration     = int64(3600)
	maxTokenRefreshAge         = 24 * time.Hour
	tokenRefreshFractionOfLife = 0.8
)

// issuedToken is a service account token and when to replace it.
type issuedToken struct {
	token     string
	refreshAt time.Time
}

// podVolumes prepares a pod's volumes under dir, one directory per volume, and keeps the
// API-backed ones (configMap, secret, downwardAPI, projected) up to date with atomic
// ..data swaps, so that files a container watches change in place.
type podVolumes struct {
	client      kubernetes.Interface
	clock       clock.Clock
	dir         string
	allocatable v1.ResourceList

	// objects holds configMaps and secrets from the last refresh; a downward API update in
	// between reuses them.
	objects *objectCache
	tokens  map[string]issuedToken
}

func newPodVolumes(client kubernetes.Interface, c clock.Clock, dir string, allocatable v1.ResourceList) *podVolumes {
	return &podVolumes{client: client, clock: c, dir: dir, allocatable: allocatable, tokens: map[string]issuedToken{}}
}

// hostPath returns where volume name lives on the node.
func (v *podVolumes) hostPath(vol *v1.Volume) string {
	if vol.HostPath != nil {
		return vol.HostPath.Path
	}
	return filepath.Join(v.dir, vol.Name)
}

// sync writes every volume of pod (whose status must carry its IPs). With refresh set, it
// fetches configMaps and secrets again and renews tokens that are due; otherwise only
// what depends on the pod object itself can change.
func (v *podVolumes) sync(ctx context.Context, pod *v1.Pod, refresh bool) error {
	if refresh || v.objects == nil {
		v.objects = newObjectCache(v.client, pod.Namespace)
	}
	var errs []error
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		if err := v.syncVolume(ctx, pod, vol); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", vol.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (v *podVolumes) syncVolume(ctx context.Context, pod *v1.Pod, vol *v1.Volume) error {
	dir := v.hostPath(vol)
	src := vol.VolumeSource
	switch {
	case src.EmptyDir != nil:
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		// World-writable like the kubelet's, so that non-root containers can use it.
		return os.Chmod(dir, 0o777)
	case src.HostPath != nil:
		return prepareHostPath(src.HostPath)
	case src.ConfigMap != nil:
		payload := map[string]fileProjection{}
		if err := v.addConfigMap(ctx, payload, &src.ConfigMap.LocalObjectReference, src.ConfigMap.Items, src.ConfigMap.Optional, modeOr(src.ConfigMap.DefaultMode)); err != nil {
			return err
		}
		return v.write(dir, payload)
	case src.Secret != nil:
		payload := map[string]fileProjection{}
		ref := v1.LocalObjectReference{Name: src.Secret.SecretName}
		if err := v.addSecret(ctx, payload, &ref, src.Secret.Items, src.Secret.Optional, modeOr(src.Secret.DefaultMode)); err != nil {
			return err
		}
		return v.write(dir, payload)
	case src.DownwardAPI != nil:
		payload := map[string]fileProjection{}
		if err := v.addDownwardAPI(payload, pod, src.DownwardAPI.Items, modeOr(src.DownwardAPI.DefaultMode)); err != nil {
			return err
		}
		return v.write(dir, payload)
	case src.Projected != nil:
		payload := map[string]fileProjection{}
		mode := modeOr(src.Projected.DefaultMode)
		for _, s := range src.Projected.Sources {
			var err error
			switch {
			case s.ConfigMap != nil:
				err = v.addConfigMap(ctx, payload, &s.ConfigMap.LocalObjectReference, s.ConfigMap.Items, s.ConfigMap.Optional, mode)
			case s.Secret != nil:
				err = v.addSecret(ctx, payload, &s.Secret.LocalObjectReference, s.Secret.Items, s.Secret.Optional, mode)
			case s.DownwardAPI != nil:
				err = v.addDownwardAPI(payload, pod, s.DownwardAPI.Items, mode)
			case s.ServiceAccountToken != nil:
				err = v.addToken(ctx, payload, pod, vol.Name, s.ServiceAccountToken, mode)
			default:
				err = fmt.Errorf("projected source not supported by the process-based node agent")
			}
			if err != nil {
				return err
			}
		}
		return v.write(dir, payload)
	}
	return fmt.Errorf("volume type not supported by the process-based node agent (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected)")
}

func (v *podVolumes) write(dir string, payload map[string]fileProjection) error {
	_, err := writeAtomic(dir, payload, v.clock.Now())
	return err
}

func modeOr(m *int32) fs.FileMode {
	if m == nil {
		return defaultVolumeMode
	}
	return fs.FileMode(*m) & fs.ModePerm
}

func itemMode(m *int32, def fs.FileMode) fs.FileMode {
	if m == nil {
		return def
	}
	return fs.FileMode(*m) & fs.ModePerm
}

func prepareHostPath(hp *v1.HostPathVolumeSource) error {
	t := v1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	switch t {
	case v1.HostPathDirectoryOrCreate:
		return os.MkdirAll(hp.Path, 0o755)
	case v1.HostPathFileOrCreate:
		if err := os.MkdirAll(filepath.Dir(hp.Path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(hp.Path, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	case v1.HostPathUnset:
		return nil
	default:
		if _, err := os.Stat(hp.Path); err != nil {
			return fmt.Errorf("hostPath type check: %w", err)
		}
		return nil
	}
}

// addItems copies data into payload: every key when items is empty, else the listed ones.
func addItems(payload map[string]fileProjection, kind, name string, data map[string][]byte, items []v1.KeyToPath, optional bool, mode fs.FileMode) error {
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			payload[k] = fileProjection{data: data[k], mode: mode}
		}
		return nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("%s %q: references non-existent key %s", kind, name, it.Key)
		}
		payload[it.Path] = fileProjection{data: d, mode: itemMode(it.Mode, mode)}
	}
	return nil
}

func (v *podVolumes) addConfigMap(ctx context.Context, payload map[string]fileProjection, ref *v1.LocalObjectReference, items []v1.KeyToPath, optional *bool, mode fs.FileMode) error {
	opt := optional != nil && *optional
	cm, err := v.objects.configMap(ctx, ref.Name)
	if err != nil {
		return err
	}
	if cm == nil {
		if opt {
			return nil
		}
		return fmt.Errorf("configmap %q not found", ref.Name)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, s := range cm.Data {
		data[k] = []byte(s)
	}
	for k, b := range cm.BinaryData {
		data[k] = b
	}
	return addItems(payload, "configmap", ref.Name, data, items, opt, mode)
}

func (v *podVolumes) addSecret(ctx context.Context, payload map[string]fileProjection, ref *v1.LocalObjectReference, items []v1.KeyToPath, optional *bool, mode fs.FileMode) error {
	opt := optional != nil && *optional
	s, err := v.objects.secret(ctx, ref.Name)
	if err != nil {
		return err
	}
	if s == nil {
		if opt {
			return nil
		}
		return fmt.Errorf("secret %q not found", ref.Name)
	}
	return addItems(payload, "secret", ref.Name, s.Data, items, opt, mode)
}

func (v *podVolumes) addDownwardAPI(payload map[string]fileProjection, pod *v1.Pod, items []v1.DownwardAPIVolumeFile, mode fs.FileMode) error {
	for _, it := range items {
		var value string
		switch {
		case it.FieldRef != nil:
			s, err := podFieldValue(pod, it.FieldRef.FieldPath)
			if err != nil {
				return err
			}
			value = s
		case it.ResourceFieldRef != nil:
			c := findContainer(pod, it.ResourceFieldRef.ContainerName)
			if c == nil {
				return fmt.Errorf("downward API item %s: container %q not found", it.Path, it.ResourceFieldRef.ContainerName)
			}
			s, err := containerResourceValue(it.ResourceFieldRef, c, v.allocatable)
			if err != nil {
				return err
			}
			value = s
		default:
			return fmt.Errorf("downward API item %s: no source", it.Path)
		}
		payload[it.Path] = fileProjection{data: []byte(value), mode: itemMode(it.Mode, mode)}
	}
	return nil
}

// addToken requests a token bound to the pod from the TokenRequest API, reusing the
// previous one until 80% of its lifetime (at most 24h) has passed.
func (v *podVolumes) addToken(ctx context.Context, payload map[string]fileProjection, pod *v1.Pod, volume string, src *v1.ServiceAccountTokenProjection, mode fs.FileMode) error {
	key := volume + "/" + src.Path
	now := v.clock.Now()
	if t, ok := v.tokens[key]; ok && now.Before(t.refreshAt) {
		payload[src.Path] = fileProjection{data: []byte(t.token), mode: mode}
		return nil
	}
	expiration := defaultTokenExpiration
	if src.ExpirationSeconds != nil {
		expiration = *src.ExpirationSeconds
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &expiration,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := v.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		if t, ok := v.tokens[key]; ok {
			// Keep serving the old token until it can be replaced.
			payload[src.Path] = fileProjection{data: []byte(t.token), mode: mode}
			return nil
		}
		return fmt.Errorf("request token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	if tr.Status.Token == "" {
		return fmt.Errorf("request token for service account %s/%s: empty token", pod.Namespace, sa)
	}
	life := time.Duration(expiration) * time.Second
	if !tr.Status.ExpirationTimestamp.IsZero() {
		life = tr.Status.ExpirationTimestamp.Sub(now)
	}
	refresh := time.Duration(float64(life) * tokenRefreshFractionOfLife)
	if refresh > maxTokenRefreshAge {
		refresh = maxTokenRefreshAge
	}
	v.tokens[key] = issuedToken{token: tr.Status.Token, refreshAt: now.Add(refresh)}
	payload[src.Path] = fileProjection{data: []byte(tr.Status.Token), mode: mode}
	return nil
}
