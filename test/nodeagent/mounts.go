package nodeagent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// mountPoints creates the directories (or files) that container mounts need on the shared
// filesystem and removes them again once no container of any agent in this process uses
// them. The mounts themselves live only in each container's private mount namespace; the
// empty mount points are the one visible trace, so they are tracked and removed, and
// journaled in the agent's state dir so that a run that was killed is cleaned up by the next.
var mountPoints = &mountPointRegistry{refs: map[string]int{}, created: map[string]bool{}}

type mountPointRegistry struct {
	mu      sync.Mutex
	refs    map[string]int  // target -> containers using it
	created map[string]bool // paths this process created
}

// acquire makes target exist (as a file when isFile) and returns a release function.
// Paths it creates are appended to journal.
func (r *mountPointRegistry) acquire(target string, isFile bool, journal string) (func(), error) {
	target = filepath.Clean(target)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.create(target, isFile, journal); err != nil {
		r.cleanupLocked()
		return nil, err
	}
	r.refs[target]++
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.refs[target]--
			if r.refs[target] <= 0 {
				delete(r.refs, target)
				r.cleanupLocked()
			}
		})
	}, nil
}

func (r *mountPointRegistry) create(target string, isFile bool, journal string) error {
	if _, err := os.Stat(target); err == nil {
		return nil
	}
	parent := filepath.Dir(target)
	var missing []string
	for p := parent; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		missing = append(missing, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	toCreate := append([]string{target}, missing...)
	if err := appendLines(journal, toCreate); err != nil {
		return fmt.Errorf("create mount point %s: %w", target, err)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("create mount point %s: %w", target, err)
		}
		r.created[missing[i]] = true
	}
	if isFile {
		f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil && !os.IsExist(err) {
			return fmt.Errorf("create mount point %s: %w", target, err)
		}
		if f != nil {
			f.Close()
		}
	} else if err := os.Mkdir(target, 0o755); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create mount point %s: %w", target, err)
	}
	r.created[target] = true
	return nil
}

func appendLines(path string, lines []string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	return errors.Join(err, f.Close())
}

// removeJournaled removes the unused mount points listed in journal (empty directories and
// empty files only) and keeps in it those that remain.
func (r *mountPointRegistry) removeJournaled(journal string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, err := os.ReadFile(journal)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read mount point journal: %w", err)
	}
	seen := map[string]bool{}
	var paths []string
	for _, p := range strings.Split(string(data), "\n") {
		if p != "" && filepath.IsAbs(p) && !seen[p] {
			seen[p] = true
			paths = append(paths, p)
		}
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	var keep []string
	for _, p := range paths {
		if r.inUseLocked(p) {
			keep = append(keep, p)
			continue
		}
		if err := removeIfEmpty(p); err != nil {
			keep = append(keep, p)
			continue
		}
		delete(r.created, p)
	}
	if len(keep) == 0 {
		return os.Remove(journal)
	}
	return os.WriteFile(journal, []byte(strings.Join(keep, "\n")+"\n"), 0o644)
}

func (r *mountPointRegistry) inUseLocked(p string) bool {
	for t := range r.refs {
		if t == p || strings.HasPrefix(t, p+"/") {
			return true
		}
	}
	return false
}

// cleanupLocked removes created paths that are neither a target in use nor an ancestor of
// one, deepest first; a path something else has filled since is kept.
func (r *mountPointRegistry) cleanupLocked() {
	paths := make([]string, 0, len(r.created))
	for p := range r.created {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, p := range paths {
		if r.inUseLocked(p) {
			continue
		}
		if err := removeIfEmpty(p); err == nil {
			delete(r.created, p)
		}
	}
}

// removeIfEmpty removes an empty directory or an empty regular file; anything else that
// now sits at p is left alone (and reported as kept).
func removeIfEmpty(p string) error {
	st, err := os.Lstat(p)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() && !(st.Mode().IsRegular() && st.Size() == 0) {
		return nil // not a mount point any more: forget it, never delete data
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
