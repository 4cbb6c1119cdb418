// Package lint holds repository-wide checks that `make test` runs as Go
// tests: rules of the developers' guide that a compiler does not enforce.
package lint
