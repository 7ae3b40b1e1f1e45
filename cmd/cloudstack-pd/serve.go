package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newServeCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Answer relayed DHCPv6 prefix-delegation requests",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("not yet")
		},
	}
	addConfigFlag(cmd, &cfgPath)
	return cmd
}
