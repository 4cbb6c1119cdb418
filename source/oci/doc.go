// Package oci talks to OCI registries on berth's behalf: it parses berth
// references, builds authenticated clients (Docker config.json, credential
// helpers, custom CAs, plain HTTP), pushes Flux-compatible artifacts, resolves
// and lists tags, and streams artifact layers through digest-verifying,
// size-limited readers.
//
// Registry access goes through oras-go; Client.RemoteOptions adapts the same
// credentials and transport to go-containerregistry for the signature code.
package oci
