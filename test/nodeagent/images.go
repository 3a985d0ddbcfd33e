package nodeagent

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// hasTag reports whether an image reference carries a tag (a colon after the last slash).
func hasTag(ref string) bool {
	return strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":")
}

// imageRepository strips the digest and tag from an image reference:
// "wsscale/echo:v1@sha256:..." -> "wsscale/echo".
func imageRepository(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if hasTag(ref) {
		ref = ref[:strings.LastIndex(ref, ":")]
	}
	return ref
}

// imageResolver maps image references to local binaries.
type imageResolver struct {
	images map[string]string
}

// errImageNotPresent is why a container cannot start: the node has no binary for its image.
type errImageNotPresent struct {
	image string
	msg   string
}

func (e *errImageNotPresent) Error() string { return e.msg }

// resolve returns the binary that runs for image. The repository is matched exactly, then
// with a docker.io/ (and docker.io/library/) prefix removed.
func (r imageResolver) resolve(image string) (string, error) {
	repo := imageRepository(image)
	candidates := []string{repo}
	for _, prefix := range []string{"docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"} {
		if strings.HasPrefix(repo, prefix) {
			candidates = append(candidates, strings.TrimPrefix(repo, prefix))
		}
	}
	for _, c := range candidates {
		bin, ok := r.images[c]
		if !ok {
			continue
		}
		st, err := os.Stat(bin)
		if err != nil {
			return "", &errImageNotPresent{image: image, msg: fmt.Sprintf("image %q maps to %s, which is not available: %v", image, bin, err)}
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", &errImageNotPresent{image: image, msg: fmt.Sprintf("image %q maps to %s, which is not an executable file", image, bin)}
		}
		return bin, nil
	}
	known := make([]string, 0, len(r.images))
	for k := range r.images {
		known = append(known, k)
	}
	sort.Strings(known)
	return "", &errImageNotPresent{image: image, msg: fmt.Sprintf("image %q is not available on this node (process-based node agent); known image repositories: [%s]", image, strings.Join(known, ", "))}
}
