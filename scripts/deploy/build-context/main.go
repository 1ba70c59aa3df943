// build-context lists the files a `docker build` of a directory sends as its context: every file
// not excluded by the directory's .dockerignore, read and matched by moby's patternmatcher, the
// library Docker itself uses. One path per line, relative, with forward slashes.
//
// Usage: build-context <directory>
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: build-context <directory>")
		os.Exit(2)
	}
	root := os.Args[1]
	if err := list(root); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func list(root string) error {
	var patterns []string
	if f, err := os.Open(filepath.Join(root, ".dockerignore")); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// .git is never useful and is large; everything else is walked so that exceptions
			// (!pattern) below an excluded directory are honoured, as Docker does.
			if rel == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if !excluded {
			fmt.Println(rel)
		}
		return nil
	})
}
