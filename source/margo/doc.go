// Package margo is berth's WFM client for the Margo Management Interface
// (1.0.0-rc.3, the mutual-TLS "MIAF" generation; the legacy onboarding and
// RFC 9421 signature generation is not supported): it polls a Workload
// Fleet Manager for the device's desired state, verifies every byte of it,
// and reports capabilities and deployment status back.
//
// Transport (Client, identity.go): HTTPS over HTTP/1.1 with mutual TLS,
// TLS 1.3 unless TLS 1.2 is allowed explicitly. The device presents its
// X.509-SVID (leaf and intermediates, from PEM files); the WFM's SVID must
// chain to the trust bundle and carry exactly the WFM SPIFFE ID
// spiffe://<td>/margo/wfm/<wfm-id>, where <td> and <wfm-id> come from the
// device's own SVID (spiffe://<td>/margo/wfm/<wfm-id>/client/<client-id>).
// The identity files are re-read when they change, and connections are
// closed then, so a renewed SVID or a rotated bundle is used at once.
//
// Errors (errors.go): a WFM's RFC 9457 problem+json body becomes an
// *APIError; Retry decides "retry later, after at least this long" or "give
// up until the next poll" from retryable, Retry-After, retryAfterSeconds
// and backoffStrategy.
//
// Desired state (Client.Poll, sync.go): GET /api/v1/deployments with the
// stored ETag and the Margo Accept type; 304 ends the poll. A new manifest
// must have a manifestVersion strictly greater than the accepted one (else
// *StaleManifestError, logged as a security event). The deployments whose
// digest is not already in the local content cache are fetched one by one
// or as the bundle, whichever is cheaper; every body is streamed through a
// size cap and a sha256 check into a temporary file before anything parses
// it. A 404 on content means "unavailable" (ErrUnavailable), never a
// deletion. Poll changes nothing the device runs and persists nothing:
// State.Accept and State.Save record an update once the agent has applied
// it.
//
// Reporting: Client.PutCapabilities and Client.PostStatus send the bodies
// of package spec; Reporter queues status posts on disk (package outbox)
// so that they survive a WFM outage and a restart, and sends them in order.
// Discover gathers the capabilities of the device.
//
// # Wiring into the agent
//
// At start: New (cfg.Margo.Client() plus a CacheDir), LoadState, outbox.Open
// and NewReporter, Discover and SyncCapabilities(force), and
// materialize.LoadPlan of the Margo revision in force. Every interval
// inside the polling windows: Discover and SyncCapabilities (the first
// call after connecting); Reporter.Flush; Poll (or, on 304 while State.Pending, Replay); then
// materialize.Materialize, post Plan.Installing and RemovalStatus(removing),
// apply the revision with the appliers, post Plan.Report and
// RemovalStatus(removed), and only after the agent has recorded the revision
// applied, State.Accept (with the failed deployment ids) and State.Save,
// then PruneCache. Backoff.Next decides when to retry a failed poll.
package margo
