package scaffold

// templates are the files of a new repository by path (APP is replaced by
// the app's name), as text/template with [[ ]] delimiters, so that the CI
// files can keep their own ${{ }} and $VARS.
var templates = map[string]string{
	"berth.yaml": `# The desired state of the devices that track this repository. CI packs
# this folder (minus .berthignore) into a signed OCI artifact with
# berth push; each device's agent applies it. See
# https://github.com/berth-dev/berth#readme
apiVersion: berth.dev/v1
kind: DeviceState
apps:
  - name: [[.App]]
    compose:
      path: apps/[[.App]]      # a folder with compose.yaml
`,

	".berthignore": `# Left out of the artifact (gitignore syntax); .git/ always is.
.github/
.gitlab-ci.yml
device/
*.md
`,

	"apps/APP/compose.yaml": `# A Compose project, run on the device's Docker Engine by the agent.
# berth push pins the image to its digest, so the signature covers it.
services:
  [[.App]]:
    image: [[.Image]]
    restart: unless-stopped
`,

	".github/workflows/berth.yaml": `# Push the desired state on every merge to main, and sign it keyless
# (Sigstore, with the workflow's identity: no key to keep). Devices verify
# it with verify.keyless in agent.yaml (see device/agent.yaml).
name: berth
on:
  push:
    branches: [main]
permissions:
  contents: read
  packages: write
  id-token: write   # keyless signing
jobs:
  push:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with: {fetch-depth: 1}
      - uses: actions/setup-go@v5
        with: {go-version: stable}
      - run: go install github.com/berth-dev/berth/cmd/berth@latest
      - uses: sigstore/cosign-installer@v3
      - name: log in
        run: echo "${{ secrets.REGISTRY_PASSWORD }}" | berth login [[.Registry]] -u "${{ secrets.REGISTRY_USER }}" --password-stdin
      - name: push
        id: push
        run: |
          digest=$(berth push . [[.Repository]]:1.0.${{ github.run_number }} -t main --output json | jq -r .digest)
          echo "digest=$digest" >> "$GITHUB_OUTPUT"
      - name: sign keyless
        run: cosign sign --yes [[.Registry]]/[[.RepoPath]]@${{ steps.push.outputs.digest }}
`,

	".gitlab-ci.yml": `# Push the desired state on every merge to the default branch and sign it
# with a cosign key kept in CI/CD variables: COSIGN_KEY (the content of
# cosign.key, from berth generate-key), COSIGN_PASSWORD, REGISTRY_USER and
# REGISTRY_PASSWORD, all masked and protected. Devices verify with
# cosign.pub (device/agent.yaml).
berth-push:
  image: golang:1.26
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
  script:
    - go install github.com/berth-dev/berth/cmd/berth@latest
    - echo "$REGISTRY_PASSWORD" | berth login [[.Registry]] -u "$REGISTRY_USER" --password-stdin
    - berth push . [[.Repository]]:1.0.$CI_PIPELINE_IID -t main --sign-key env://COSIGN_KEY
`,

	"device/agent.yaml": `# The device's agent configuration: copy to /etc/berth/agent.yaml (with
# cosign.pub next to it), check with berth agent --check-config, and run
# the agent (the berth package's berth-agent.service does).
sources:
  - name: [[.Source]]
    url: [[.Repository]]
    ref: {semver: ">=1.0.0"}          # every release CI pushes; or tag: main
    interval: 1m
    verify: {keys: [cosign.pub]}      # the key the GitLab pipeline signs with
    # Signed keyless by the GitHub workflow instead:
    # verify:
    #   keyless:
    #     trustedRoot: trusted_root.json
    #     identities:
    #       - issuer: '^https://token\.actions\.githubusercontent\.com$'
    #         subject: '^https://github\.com/ORG/REPO/'
[[- if .Insecure]]
    insecure: true                    # plain-HTTP registry (lab only)
[[- end]]
apply:
  compose: {}                         # run the Compose apps on this device's Docker Engine
`,
}
