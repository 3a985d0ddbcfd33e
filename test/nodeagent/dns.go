package nodeagent

import (
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
)

// resolvConf renders the pod's /etc/resolv.conf as the kubelet does for its DNS policy, or
// reports that the container keeps the node's own file (policy Default without dnsConfig,
// or a ClusterFirst pod when the node has no cluster DNS).
func resolvConf(pod *v1.Pod, clusterDNS []string, clusterDomain string) (string, bool) {
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = v1.DNSClusterFirst
	}
	cluster := len(clusterDNS) > 0 && clusterDomain != ""
	var nameservers, searches []string
	options := map[string]string{}
	var optionOrder []string
	setOption := func(name, value string) {
		if _, ok := options[name]; !ok {
			optionOrder = append(optionOrder, name)
		}
		options[name] = value
	}
	switch {
	case policy == v1.DNSNone:
	case (policy == v1.DNSClusterFirst && !pod.Spec.HostNetwork) || policy == v1.DNSClusterFirstWithHostNet:
		if !cluster {
			if pod.Spec.DNSConfig == nil {
				return "", false
			}
			break
		}
		nameservers = append(nameservers, clusterDNS...)
		searches = []string{pod.Namespace + ".svc." + clusterDomain, "svc." + clusterDomain, clusterDomain}
		setOption("ndots", "5")
	default: // Default, or ClusterFirst on the host network: the node's resolver.
		if pod.Spec.DNSConfig == nil {
			return "", false
		}
	}
	if c := pod.Spec.DNSConfig; c != nil {
		for _, ns := range c.Nameservers {
			if !slices.Contains(nameservers, ns) {
				nameservers = append(nameservers, ns)
			}
		}
		for _, s := range c.Searches {
			if !slices.Contains(searches, s) {
				searches = append(searches, s)
			}
		}
		for _, o := range c.Options {
			value := ""
			if o.Value != nil {
				value = *o.Value
			}
			setOption(o.Name, value)
		}
	}
	// The resolver reads at most three nameservers and six search domains.
	nameservers = nameservers[:min(len(nameservers), 3)]
	searches = searches[:min(len(searches), 6)]
	var b strings.Builder
	for _, ns := range nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
	}
	if len(optionOrder) > 0 {
		opts := make([]string, 0, len(optionOrder))
		for _, name := range optionOrder {
			if v := options[name]; v != "" {
				opts = append(opts, name+":"+v)
			} else {
				opts = append(opts, name)
			}
		}
		fmt.Fprintf(&b, "options %s\n", strings.Join(opts, " "))
	}
	return b.String(), true
}
