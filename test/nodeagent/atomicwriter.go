package nodeagent

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Names inside a volume directory written by writeAtomic. The layout is the kubelet's:
//
//	dir/..2026_11_25_17_12_48.1234/labels   the payload, one timestamped directory per version
//	dir/..data -> ..2026_11_25_17_12_48.1234 swapped with a rename, so readers see one version
//	dir/labels -> ..data/labels             user-visible names never change
const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
)

// fileProjection is one file of a volume payload.
type fileProjection struct {
	data []byte
	mode fs.FileMode
}

// validatePayloadPath rejects absolute paths, ".." elements and names starting with "..",
// which would collide with the writer's own entries.
func validatePayloadPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path")
	case path.IsAbs(p):
		return fmt.Errorf("path %q: must be relative", p)
	case strings.HasPrefix(p, ".."):
		return fmt.Errorf("path %q: must not start with '..'", p)
	}
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return fmt.Errorf("path %q: must not contain '..'", p)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("path %q: must be clean", p)
	}
	return nil
}

// writeAtomic makes dir hold exactly payload, switching from the previous version with
// one atomic rename of the ..data symlink, and reports whether anything changed. A reader
// that opens dir/<name> sees either the old or the new content, never a mix.
func writeAtomic(dir string, payload map[string]fileProjection, now time.Time) (bool, error) {
	for p := range payload {
		if err := validatePayloadPath(p); err != nil {
			return false, fmt.Errorf("write volume %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("write volume %s: %w", dir, err)
	}
	oldTS, err := os.Readlink(filepath.Join(dir, dataDirName))
	if err != nil && !os.IsNotExist(err) {
		return false, fmt.Errorf("write volume %s: %w", dir, err)
	}
	if oldTS != "" {
		same, err := payloadMatches(filepath.Join(dir, oldTS), payload)
		if err != nil {
			return false, fmt.Errorf("write volume %s: compare: %w", dir, err)
		}
		if same {
			return false, nil
		}
	}

	tsDir, err := os.MkdirTemp(dir, now.UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, fmt.Errorf("write volume %s: %w", dir, err)
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return false, fmt.Errorf("write volume %s: %w", dir, err)
	}
	for p, f := range payload {
		full := filepath.Join(tsDir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, fmt.Errorf("write volume %s: %w", dir, err)
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return false, fmt.Errorf("write volume %s: %w", dir, err)
		}
		// WriteFile's mode is subject to the umask; set it exactly.
		if err := os.Chmod(full, f.mode); err != nil {
			return false, fmt.Errorf("write volume %s: %w", dir, err)
		}
	}

	tmpLink := filepath.Join(dir, newDataDirName)
	if err := os.Remove(tmpLink); err != nil && !os.IsNotExist(err) {
		return false, fmt.Errorf("write volume %s: %w", dir, err)
	}
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return false, fmt.Errorf("write volume %s: %w", dir, err)
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataDirName)); err != nil {
		return false, fmt.Errorf("write volume %s: swap %s: %w", dir, dataDirName, err)
	}

	// User-visible names: one symlink per top-level element into ..data.
	want := map[string]bool{}
	for p := range payload {
		want[strings.SplitN(p, "/", 2)[0]] = true
	}
	for top := range want {
		link := filepath.Join(dir, top)
		target := filepath.Join(dataDirName, top)
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		if err := os.RemoveAll(link); err != nil {
			return false, fmt.Errorf("write volume %s: %w", dir, err)
		}
		if err := os.Symlink(target, link); err != nil {
			return false, fmt.Errorf("write volume %s: %w", dir, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("write volume %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "..") {
			if name != dataDirName && name != filepath.Base(tsDir) && e.IsDir() {
				// Older versions, including one left behind by an interrupted write.
				if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
					return false, fmt.Errorf("write volume %s: %w", dir, err)
				}
			}
			continue
		}
		if !want[name] && e.Type()&fs.ModeSymlink != 0 {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return false, fmt.Errorf("write volume %s: %w", dir, err)
			}
		}
	}
	return true, nil
}

// payloadMatches reports whether dataDir holds exactly payload (content and mode).
func payloadMatches(dataDir string, payload map[string]fileProjection) (bool, error) {
	var existing []string
	err := filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dataDir, p)
		if err != nil {
			return err
		}
		existing = append(existing, filepath.ToSlash(rel))
		return nil
	})
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(existing) != len(payload) {
		return false, nil
	}
	sort.Strings(existing)
	for _, p := range existing {
		f, ok := payload[p]
		if !ok {
			return false, nil
		}
		full := filepath.Join(dataDir, filepath.FromSlash(p))
		st, err := os.Stat(full)
		if err != nil {
			return false, err
		}
		if st.Mode().Perm() != f.mode.Perm() {
			return false, nil
		}
		data, err := os.ReadFile(full)
		if err != nil {
			return false, err
		}
		if !bytes.Equal(data, f.data) {
			return false, nil
		}
	}
	return true, nil
}
