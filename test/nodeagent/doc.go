// Package nodeagent is a process-based node agent, test infrastructure for the local
// cluster: it registers a Node and runs the pods bound to it as local processes, giving
// each what a kubelet gives a container, so that the project's charts run unchanged.
//
// The caller runs it as root inside the node network namespace (every thread of the
// process in it), where NodeIP is already a local address.
//
// # Node
//
// New validates the Options; Run creates or takes over the Node (capacity, allocatable,
// InternalIP, Ready), renews its Lease in kube-node-lease every quarter of LeaseDuration
// and refreshes the condition heartbeats every NodeStatusPeriod. Pods come from an
// informer on spec.nodeName. Several agents (distinct NodeName, PodCIDR and StateDir) may
// run in one process.
//
// # Pods
//
// Every pod has one worker goroutine, and there are at most MaxPods of them (more pods are
// rejected with reason OutOfpods, as kubelet admission does). A pod gets:
//
//   - Its own network namespace: a bind-mounted nsfs file under StateDir/netns (so it
//     outlives container restarts) joined to the node namespace by a veth pair. The pod side,
//     eth0, has the pod IP as a /32 and a default route via 169.254.1.1; the node side
//     carries 169.254.1.1/32 (so it answers the pod's ARP) and a /32 route to the pod IP
//     with source NodeIP, as the CNI ptp plugin does. iproute2 and util-linux do the work.
//     Pods reach each other and NodeIP:APIServerPort; the node namespace reaches every pod.
//     A hostNetwork pod stays in the node namespace and has NodeIP as its address.
//   - Volumes under StateDir/pods/<uid>/volumes: emptyDir, hostPath, configMap, secret,
//     downwardAPI and projected (serviceAccountToken from the TokenRequest API, configMap,
//     secret, downwardAPI). API-backed volumes are written like the kubelet's AtomicWriter
//     (timestamped directory, ..data symlink swapped by rename, user-visible symlinks), so
//     a file a container watches changes in place: downward API files DownwardAPISyncDelay
//     after the pod's labels or annotations change (a kubelet's next sync), the others
//     every VolumeResyncPeriod; tokens are renewed at 80% of their lifetime.
//     Labels and annotations use the kubelet format: sorted key="value" lines, Go %q quoting.
//   - Its containers as processes. The agent re-executes its own binary (/proc/self/exe)
//     with fresh mount and UTS namespaces; this package's init notices the launch variable,
//     joins the pod's network namespace, bind-mounts each volume at its mountPath (read-only
//     where asked), sets the hostname to the pod name, applies runAsUser/runAsGroup and
//     executes the binary in place, so the mounts exist for that container only. Missing
//     mount points are created on the shared filesystem, journaled in StateDir/mountpoints
//     and removed when no container needs them (or on the next start after a crash).
//     Children are forked from one locked thread so that Pdeathsig (SIGKILL) fires only when
//     the agent's process dies.
//   - The binary its image names: Images maps a repository (tag and digest stripped, a
//     docker.io/ prefix ignored) to a local binary. An unknown image leaves the container
//     waiting with ErrImagePull, then ImagePullBackOff, and a message naming known images.
//   - Its arguments: the binary replaces the image entrypoint, so command[0] is dropped and
//     the rest of command comes before args (command [/echo, -v], args [x] runs `echo -v x`);
//     $(VAR) references are expanded.
//   - Its environment: PATH and HOSTNAME as an image would set them, envFrom, then env
//     (value with $(VAR) expansion, fieldRef, resourceFieldRef, configMapKeyRef,
//     secretKeyRef), then KUBERNETES_SERVICE_HOST=NodeIP and KUBERNETES_SERVICE_PORT=
//     APIServerPort. A missing reference leaves the container waiting with
//     CreateContainerConfigError until it appears.
//   - Init containers first, one at a time in order, each to completion; a failed one
//     restarts with back-off (or, with restartPolicy Never, fails the pod). Meanwhile the
//     pod is Pending, Initialized is False and the other containers wait PodInitializing.
//     An init container with restartPolicy Always (a sidecar) counts as done once started,
//     keeps running and restarting whatever the pod's policy, and counts towards readiness;
//     it stops with the other containers, not after them.
//   - Probes: startup, liveness and readiness probes with the API's defaults and
//     thresholds. httpGet, tcpSocket and grpc (grpc.health.v1) are dialled from the node
//     namespace to the pod IP; exec probes run their command (from the node's filesystem:
//     the images have no shell) with nsenter in the container's mount, network and UTS
//     namespaces, with its uid, gid, environment and working directory, killed at the
//     probe's timeout. A failed liveness or startup probe stops the container (SIGTERM,
//     SIGKILL after the grace period), which then restarts.
//   - Hooks: postStart (exec, httpGet, sleep) runs after the start and holds probes and
//     readiness back until it returns; when it fails the container is killed with
//     FailedPostStartHook and restarts per restartPolicy.
//   - Restarts per restartPolicy with the kubelet's back-off: the first immediately, then
//     CrashLoopBackOff from CrashLoopBackOffBase doubling up to CrashLoopBackOffMax; a run
//     longer than twice the maximum resets it.
//   - A status like the kubelet's: phase, conditions (PodReadyToStartContainers,
//     Initialized, ContainersReady, Ready, PodScheduled), podIP(s), hostIP(s), startTime and
//     container statuses with state, lastState, ready, started and restartCount.
//   - Events as the kubelet reports them (source component "kubelet", host NodeName):
//     Pulled, Created, Started, Killing, Unhealthy, BackOff, Failed, FailedMount,
//     FailedCreatePodSandBox, FailedPostStartHook and FailedPreStopHook.
//   - Logs: each run's stdout and stderr in StateDir/logs/<ns>_<pod>_<uid>/<container>/<n>.log,
//     kept after the pod is gone.
//
// # Termination
//
// When the pod gets a deletionTimestamp, the worker runs preStop hooks (exec, sleep, httpGet),
// sends SIGTERM to each container's process group and SIGKILL when the deletion grace
// period ends, removes the network namespace, veth pair, mount points and volume
// directories, writes the final status and deletes the pod with grace period 0. A pod
// removed from the API outright is stopped the same way with its terminationGracePeriod.
// When Run's context ends, every pod is stopped with its grace period capped at
// ShutdownGracePeriod and nothing is written to the API.
//
// Not supported: ephemeral containers, resource limits, image pull secrets.
package nodeagent
