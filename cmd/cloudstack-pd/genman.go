package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newGenManCmd writes the man pages of every command: `make deb` installs
// them. Hidden: it documents the program, it is not part of running it.
func newGenManCmd() *cobra.Command {
	var dir, date string
	cmd := &cobra.Command{
		Use:    "gen-man",
		Short:  "Write a man page (section 1) for cloudstack-pd and each of its commands into --dir",
		Hidden: true,
		Args:   cobra.NoArgs,
		Example: `  cloudstack-pd gen-man --dir /usr/local/share/man/man1
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) cloudstack-pd gen-man --dir build/man`,
		Long: `Gen-man writes cloudstack-pd.1 and one page per command
(cloudstack-pd-serve.1, …) into --dir, from the commands' own help. The
date in the pages is --date, else SOURCE_DATE_EPOCH, else today, so that a
package build is reproducible.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			when, err := manDate(date)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("--dir %s: %w", dir, err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			return doc.GenManTree(root, &doc.GenManHeader{
				Title: "CLOUDSTACK-PD", Section: "1", Date: &when,
				Source: "cloudstack-pd " + root.Version, Manual: "cloudstack-pd manual",
			}, dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "folder to write the pages into (created if need be)")
	cmd.Flags().StringVar(&date, "date", "", "date of the pages, YYYY-MM-DD (default: SOURCE_DATE_EPOCH, else today)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

// manDate is the pages' date: s (YYYY-MM-DD), else SOURCE_DATE_EPOCH,
// else now.
func manDate(s string) (time.Time, error) {
	if s != "" {
		t, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return t, fmt.Errorf("--date %q: want YYYY-MM-DD", s)
		}
		return t, nil
	}
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		var sec int64
		if _, err := fmt.Sscan(e, &sec); err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: not a number of seconds", e)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	return time.Now().UTC(), nil
}
