// compose-config loads compose files with compose-go, the library behind `docker compose config`:
// the same schema validation, interpolation and merging of override files, without a container
// engine. It prints the resolved project as JSON, or exits 1 with the loader's error (a missing
// required variable, an unknown key, a wrong type).
//
// Usage: compose-config [-f file]... [--env-file file] [--profile name]...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var files, envFiles, profiles list
	flag.Var(&files, "f", "compose file (repeatable; later files override earlier ones)")
	flag.Var(&envFiles, "env-file", "file of variables for interpolation (repeatable)")
	flag.Var(&profiles, "profile", "profile to enable (repeatable)")
	name := flag.String("project-name", "dps", "project name")
	flag.Parse()

	opts, err := cli.NewProjectOptions(files,
		cli.WithName(*name),
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithOsEnv,
		cli.WithProfiles(profiles),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(false),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
