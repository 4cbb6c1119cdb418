// Package materialize turns verified Margo ApplicationDeployments into
// what berth's appliers take: a revision folder and a state.DeviceState
// (state.Revision).
//
// Every component becomes one app, in the order of the manifest's
// deployments and of their components (the install order):
//
//   - a Helm component is a Helm app whose chart is the component's
//     repository at the digest its revision resolves to: its chart layer
//     is extracted through the delivery path into apps/<app> of the
//     revision (checked to hold one folder, named after the repository,
//     whose Chart.yaml has the component's version), and the app loads
//     that folder, so that the revision needs no registry to be applied
//     or put back. It is installed as release <app> in the deployment's
//     namespace, with wait and timeout from the component and the
//     parameters aimed at it as values (their pointers are Helm value
//     paths, --set syntax, or RFC 6901 JSON Pointers when they start with
//     "/");
//   - a Compose component is a Compose Archive: its manifest must have the
//     artifact type application/vnd.org.margo.component.compose+json and
//     exactly one layer of type
//     application/vnd.org.margo.component.compose.tar+gzip, extracted
//     through the delivery path (deliver.Verified.Extract: streamed through
//     a size cap and a digest check into berth's safe extractor, which
//     refuses absolute paths, "..", hard links and devices and drops
//     setuid/setgid/sticky; the folder appears only once every byte was
//     checked) and checked to hold one top-level folder with compose.yaml
//     and no link leaving it; the app runs that folder's compose.yaml with
//     the parameters aimed at the component as its interpolation
//     environment (state.Compose.Env), and the component's wait and
//     timeout.
//
// Every component's revision is resolved once to a digest, and that
// digest's manifest is fetched and, under the Fetcher's trust policy, its
// signature verified (Fetcher.Open) before anything else. Its layer then
// downloads with Options.Download: resumed with HTTP Range after a reset
// or a restart (from a partial kept in Download.PartialDir), capped by
// Download.Limiter, and not started when it would leave less free space
// than Download.MinFree (CodeNoSpace).
//
// Before a deployment is materialized, its device id, profile type and
// device constraints are checked against the device. A deployment whose
// YAML digest is the one the previous revision materialized is taken over
// from it as it is (its files copied), without fetching its components
// again. A deployment that fails any step is reported in Result.Failed;
// when the previous revision had it, its apps are carried over unchanged
// (their files copied into the new folder), so that a bad update never
// removes what runs. Rollback builds the revision that puts deployments
// whose apply failed back on their previous revision.
//
// The revision folder holds PlanFile, the plan as JSON, from which
// LoadPlan rebuilds the DeviceState after a restart; the revision digest is
// the sha256 of that file.
package materialize
