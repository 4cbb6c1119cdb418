// Package spec holds the wire formats of the Margo Management Interface
// (specification 1.0.0-rc.3, the "MIAF" generation) as a WFM client sees
// them, with strict parsers for what a WFM sends and the bodies a device
// sends back:
//
//   - the State Manifest (GET /api/v1/deployments), ParseManifest;
//   - the ApplicationDeployment YAML, in the three envelopes the spec has
//     had (current rc.3 shape, the intermediate one with a top-level id and
//     metadata.annotations.applicationId, and the oldest
//     application.margo.org/v1alpha1 one), ParseDeployment;
//   - RFC 9457 problem+json error bodies, ParseProblem;
//   - the device capabilities (PUT /api/v1/capabilities/{deviceId}) and
//     deployment status (POST /api/v1/deployments/{id}/status) bodies,
//     Capabilities and DeploymentStatus, with their Validate methods;
//   - device constraints (deviceConstraints of a deployment profile),
//     evaluated against the capabilities a device reports.
//
// Everything a WFM sends is untrusted: parsers take bounded byte slices
// (the caller caps and digest-verifies them first), refuse duplicate keys,
// wrong types and unknown fields (except the x-<name>-extensions keys the
// spec allows, which are ignored), and report every problem at once. Their
// errors belong to errdef.ErrRefused: a WFM that serves an invalid document
// serves it again, so it is not retried elsewhere.
//
// Where the spec is silent or inconsistent, the choice made here is written
// at the type or function concerned.
package spec
