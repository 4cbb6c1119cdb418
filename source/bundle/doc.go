// Package bundle makes, reads, checks and unloads berth bundles: a desired
// state, its signatures and every chart and image its lock names, in one
// file a technician can carry to a site that cannot reach the registries.
//
// # Layout
//
// A bundle is an OCI image layout, version 1.0.0, in an uncompressed tar
// (POSIX/PAX format, no directories needed):
//
//	oci-layout                 {"imageLayoutVersion":"1.0.0"}
//	blobs/sha256/<hex>         every manifest, index, config and layer, once
//	index.json                 an OCI image index: the top-level descriptors
//
// Content is copied byte for byte, so every digest is the one the source
// registry served: a bundle, and the registry it is pushed to later, holds
// the same manifests under the same digests, and the signatures made over
// them still verify ("digests must survive relocation").
//
// Every descriptor in index.json is one top-level manifest or index with
// two annotations:
//
//   - org.opencontainers.image.ref.name: its full original reference,
//     host/repository:tag (registry.example:5000/acme/state:v1) when it was
//     reached through a tag, else host/repository@sha256:<hex>. The
//     repository is where it came from and, under the name mapping of
//     Bundle.Push, where it goes. A manifest recorded under several names
//     has several descriptors. Docker Hub is docker.io.
//   - dev.berth.bundle.role: what it is to the state:
//     "state", the state artifact the bundle was made from (exactly one);
//     "signature", a manifest in its repository that signs or attests it:
//     an OCI referrer of the state (cosign's sigstore bundle; recorded by
//     digest, served back through the referrers API and re-attached by
//     Push through the referrers API or the sha256-<hex> tag fallback) or
//     cosign's legacy sha256-<hex>.sig tag (recorded by tag);
//     "chart" and "image", every entry of kind chart and image in the
//     state's berth.lock.json, recorded under the lock's repository, with
//     the tag from the lock's reference when it has one, pinned to the
//     lock's digest (a multi-platform image is its index).
//
// index.json's own annotations record dev.berth.bundle.root, the root
// reference (the state's reference name), and, when the bundle was made
// for some platforms only, dev.berth.bundle.platforms (comma-separated,
// such as "linux/arm64,linux/arm/v7").
//
// # Platforms
//
// By default an image index is bundled with every child manifest. With
// platforms, only the children for those platforms (and children that are
// indexes themselves) are, but the index itself is kept unchanged, so its
// digest, the one the lock pins and Compose files name, survives; it then
// names child manifests the bundle does not hold. Reading such a bundle
// accepts exactly those gaps (children whose platform is not one of
// dev.berth.bundle.platforms); any other missing blob makes it invalid.
// A registry that checks an index's children when it is pushed (the
// distribution registry does) refuses such an index: Push then reports it
// and pushes the children it has, so devices of the bundled platforms can
// pull by the child digests, or take the bundle directly (Transport).
// Non-distributable (foreign) layers are never bundled, as registries do
// not copy them either.
//
// # Reading untrusted bundles
//
// A bundle comes from a USB stick or a download, so Open treats it as
// hostile: the tar is indexed without being extracted; names must be
// exactly oci-layout, index.json or blobs/<algorithm>/<encoded digest>
// (directories blobs/ and blobs/<algorithm>/ are tolerated); absolute
// names, "..", duplicates, links, devices, sparse files and anything else
// are refused; index.json and manifests are size-capped; every manifest is
// digest-checked when read; every blob the graph needs must be present with
// the size its descriptors give. Layers are only checked when read:
// Transport and Push verify every blob against its digest while streaming
// it, and Verify reads and checks them all, naming the blob and what it
// belongs to on a mismatch.
//
// # Making and unloading
//
// Create streams everything from the registries straight into the tar,
// each blob checked against its digest as it is copied; nothing is held in
// memory but manifests, and a blob shared by several images is stored
// once. Push loads a bundle into a registry, skipping what is there.
package bundle
