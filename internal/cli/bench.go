package cli

import "github.com/spf13/cobra"

func benchCmd(env Env, rf *rootFlags) *cobra.Command {
	return &cobra.Command{Use: "bench", Short: "Measure throughput and latency", Hidden: true}
}
