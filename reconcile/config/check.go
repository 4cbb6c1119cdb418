package config

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/yamlstrict"
	"github.com/berth-dev/berth/policy/cosign"
)

// maxCheckedFile caps what Check reads of a CA bundle or Docker config.
const maxCheckedFile = 16 << 20

// Check verifies what Parse leaves to the device, for
// `berth agent --check-config`: that the files the configuration names
// exist and are usable. Public keys must parse, trusted roots load, CA
// files hold PEM certificates, Docker config files are JSON, the kubeconfig
// is a readable file, envDir and valuesDir are folders, and stateDir, when
// it exists, is a folder. The Margo identity must load, chain to its trust
// bundle and be valid now, with SPIFFE IDs that agree (see checkMargo).
// The device must have a stable id (device.id, else its machine id): the
// agent refuses to start without one.
// Environment key references (env://VAR) must name
// a set variable holding a key. All the problems are returned at once,
// joined, each an *Error located at the line of its field when c was
// parsed.
func (c *Config) Check() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &Error{File: c.File, Line: c.lines[path], Field: path, Msg: fmt.Sprintf(format, args...)})
	}
	if _, err := c.Device.Identity(); err != nil {
		path := "device.id"
		if c.Device.IDFile != "" {
			path = "device.idFile"
		}
		add(path, "%v", err)
	}
	if fi, err := os.Stat(c.StateDir); err == nil && !fi.IsDir() {
		add("stateDir", "%s is not a folder", c.StateDir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		add("stateDir", "%s", describe(err))
	}
	for i, s := range c.Sources {
		path := yamlstrict.Index("sources", i)
		if v := s.Verify; v != nil {
			for j, k := range v.Keys {
				kp := yamlstrict.Index(join(path, "verify.keys"), j)
				if !strings.HasPrefix(k, cosign.EnvPrefix) {
					if err := regularFile(k); err != nil {
						add(kp, "%s", describe(err))
						continue
					}
				}
				if _, err := cosign.LoadPublicKeys(k); err != nil {
					add(kp, "%v", err)
				}
			}
			if kl := v.Keyless; kl != nil {
				tp := join(path, "verify.keyless.trustedRoot")
				if err := regularFile(kl.TrustedRoot); err != nil {
					add(tp, "%s", describe(err))
				} else if _, err := cosign.LoadTrustedRoot(kl.TrustedRoot); err != nil {
					add(tp, "%v", err)
				}
			}
		}
		checkTransport(add, path, s.Credentials.DockerConfig, s.CAFile)
		if f := s.File; f != "" {
			// The medium may be absent now (the agent reports it at every
			// poll); when present it must be a regular file.
			fp := join(path, "url")
			if fi, err := os.Stat(f); err == nil && !fi.Mode().IsRegular() {
				add(fp, "%s is not a regular file (a bundle made by berth bundle create)", f)
			}
		}
	}
	if c.Bundles.PushTo != "" {
		checkTransport(add, "bundles", c.Bundles.Credentials.DockerConfig, c.Bundles.CAFile)
	}
	if f := c.Apply.Helm.Kubeconfig; f != "" {
		if err := regularFile(f); err != nil {
			add("apply.helm.kubeconfig", "%s", describe(err))
		}
	}
	c.checkMargo(time.Now(), add)
	c.checkReport(add)
	for _, d := range []struct{ path, dir string }{
		{"apply.compose.envDir", c.Apply.Compose.EnvDir},
		{"apply.helm.valuesDir", c.Apply.Helm.ValuesDir},
	} {
		if d.dir == "" {
			continue
		}
		if fi, err := os.Stat(d.dir); err != nil {
			add(d.path, "%s", describe(err))
		} else if !fi.IsDir() {
			add(d.path, "%s is not a folder", d.dir)
		}
	}
	return errors.Join(errs...)
}

// checkTransport checks the Docker config and CA file of a registry
// client configured at path.
func checkTransport(add func(path, format string, args ...any), path, dockerConfig, caFile string) {
	if f := dockerConfig; f != "" {
		fp := join(path, "credentials.dockerConfig")
		if data, err := readFile(f); err != nil {
			add(fp, "%s", describe(err))
		} else if err := json.Unmarshal(data, new(map[string]json.RawMessage)); err != nil {
			add(fp, "%s is not a Docker config.json: %v", f, err)
		}
	}
	if f := caFile; f != "" {
		fp := join(path, "caFile")
		if data, err := readFile(f); err != nil {
			add(fp, "%s", describe(err))
		} else if !x509.NewCertPool().AppendCertsFromPEM(data) {
			add(fp, "%s holds no PEM certificate", f)
		}
	}
}

// regularFile checks that path is a regular file that can be opened for
// reading.
func regularFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return nil
}

// readFile reads the regular file at path, up to maxCheckedFile bytes.
func readFile(path string) ([]byte, error) {
	if err := regularFile(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCheckedFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxCheckedFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxCheckedFile)
	}
	return data, nil
}

// describe words a file system error: "cannot read PATH: REASON".
func describe(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Sprintf("cannot read %s: %v", pe.Path, pe.Err)
	}
	return err.Error()
}
