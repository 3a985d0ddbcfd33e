package localcluster

import (
	"context"
	"fmt"

	"github.com/wsscale/wsscale/test/nodeagent"
)

// startNodeAgent runs the process-based node agent in this process, inside the node
// network, with the admin kubeconfig.
func (s *supervisor) startNodeAgent() error {
	agent, err := nodeagent.New(nodeagent.Options{
		Kubeconfig:    s.path("kubeconfigs", "admin.kubeconfig"),
		NodeName:      s.cfg.NodeName,
		NodeIP:        NodeIP,
		APIServerPort: APIServerPort,
		PodCIDR:       PodCIDR,
		Images:        s.cfg.Images,
		StateDir:      s.path("node"),
	})
	if err != nil {
		return fmt.Errorf("node agent: %w", err)
	}
	s.runNodeAgent(agent)
	return nil
}

func (s *supervisor) runNodeAgent(agent nodeAgentRunner) {
	ctx, cancel := context.WithCancel(context.Background())
	s.agentCancel = cancel
	s.agentRuns = true
	go func() { s.agentDone <- agent.Run(ctx) }()
}
