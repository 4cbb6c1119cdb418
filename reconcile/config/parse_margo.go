package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/internal/yamlstrict"
	"github.com/berth-dev/berth/policy/cosign"
	"github.com/berth-dev/berth/source/margo"
	"github.com/berth-dev/berth/source/margo/spec"
)

// Defaults of the margo block.
const (
	// DefaultMargoInterval is margo.interval when not set.
	DefaultMargoInterval = time.Minute
	// DefaultMargoTimeout is margo.timeout when not set.
	DefaultMargoTimeout = 30 * time.Second
	// DefaultMargoStatusQueue is margo.statusQueue when not set.
	DefaultMargoStatusQueue = 1000
	// MaxMargoStatusQueue is the largest margo.statusQueue.
	MaxMargoStatusQueue = 100_000
)

// Margo makes the device the WFM client of a Margo Workload Fleet Manager
// (Management Interface 1.0.0-rc.3, mutual TLS):
//
//	margo:
//	  wfm: https://wfm.plant.local            # base URL, https only
//	  deviceId: press-07
//	  identity: {cert: /etc/berth/svid.pem, key: /etc/berth/svid-key.pem, trustBundle: /etc/berth/margo-bundle.pem}
//	  wfmID: spiffe://plant.example/margo/wfm/line-3   # optional: derived from the SVID, must match it
//	  allowTLS12: false                      # TLS 1.3 only by default
//	  interval: 1m                           # default 1m
//	  timeout: 30s                           # per request, default 30s
//	  windows:                               # local time; none: always
//	    polling: ["Mon-Fri 06:00-22:00"]
//	    downtime: ["Sun 02:00-04:00"]
//	  verify: {keys: [/etc/berth/vendor.pub]} # cosign policy on every component, or insecureSkipVerify: true
//	  device:                                # the capabilities reported
//	    vendor: Acme                         # default: DMI, else "unknown"
//	    modelNumber: E-100
//	    serialNumber: SN1
//	    labels: {example.com/line: "7"}
//	    interfaces: [ethernet]               # default: the physical interfaces found
//	    peripherals: [{type: gpu, manufacturer: NVIDIA, model: Orin}]
//	    otelCollector: false
//	    storagePath: /var/lib/docker         # whose size is reported; default /
//	  statusQueue: 1000                      # status posts kept while the WFM is away
//	  limits: {maxSize: 1073741824, maxFiles: 100000}   # per Compose Archive
//	  maxBandwidth: 256KiB                   # per second, components' downloads; default: the global maxBandwidth
//	  credentials: {dockerConfig: /etc/berth/docker/config.json}  # component registries
//	  caFile: /etc/berth/plant-ca.pem        # or insecure: true (plain HTTP)
//
// The components are pulled through the registry mirrors of registries:,
// with credentials, caFile and insecure, which also serve the Helm
// applier's chart pulls when no source gives its own. The Margo source is
// named MargoSource in status and state; no source may take that name.
// With a margo block, sources may be empty.
type Margo struct {
	// WFM is the WFM's base URL.
	WFM string
	// DeviceID is the device's id in the WFM.
	DeviceID string
	// Identity is the device's X.509-SVID, key and trust bundle.
	Identity MargoIdentity
	// WFMID is the WFM SPIFFE ID required; empty: derived from the SVID.
	WFMID string
	// TrustBundle fetches the trust bundle from the MIS; nil: the
	// identity's trustBundle file only.
	TrustBundle *MargoTrustBundle
	// AllowTLS12 accepts TLS 1.2 besides 1.3.
	AllowTLS12 bool
	// Interval between polls, at least MinInterval. Default
	// DefaultMargoInterval.
	Interval time.Duration
	// Timeout of each request. Default DefaultMargoTimeout.
	Timeout time.Duration
	// Windows are the polling hours and downtime.
	Windows margo.Windows
	// Verify is the cosign policy every component must pass; nil only with
	// InsecureSkipVerify.
	Verify *Verify
	// InsecureSkipVerify applies components without signature checks.
	InsecureSkipVerify bool
	// Device is what the capabilities report besides what is discovered.
	Device MargoDevice
	// StatusQueue bounds the status posts kept on disk. Default
	// DefaultMargoStatusQueue.
	StatusQueue int
	// Limits cap an extracted Compose Archive.
	Limits Limits
	// MaxBandwidth caps the components' downloads (Compose Archives and
	// Helm charts), in bytes per second; 0: the global MaxBandwidth
	// applies.
	MaxBandwidth int64
	// Credentials, CAFile and Insecure reach the component registries.
	Credentials Credentials
	CAFile      string
	Insecure    bool
}

// MargoSource is the name of the Margo source in status, state and the
// Compose projects and Helm releases it deploys.
const MargoSource = "margo"

// MargoIdentity names the identity files.
type MargoIdentity struct {
	Cert, Key, TrustBundle string
}

// MargoTrustBundle is the margo.trustBundle block: where the SPIFFE
// bundle is fetched (uri, or discovery's /.well-known/margo), how often,
// and the anchors of the MIS's HTTPS certificate. The accepted bundle is
// cached under the state folder (margo/trust-bundle.json).
type MargoTrustBundle struct {
	URI, Discovery string
	// Refresh 0: the bundle's spiffe_refresh_hint.
	Refresh time.Duration
	CAFile  string
}

// MargoDevice is what the operator says of the device.
type MargoDevice struct {
	Vendor, ModelNumber, SerialNumber string
	Labels                            map[string]string
	// Interfaces nil: discovered.
	Interfaces    []string
	Peripherals   []spec.Peripheral
	OtelCollector bool
	StoragePath   string
}

// Info returns the margo.DeviceInfo of the configuration, with the
// deployment types of the appliers configured in a.
func (m *Margo) Info(a Apply) margo.DeviceInfo {
	var types []string
	if a.Helm.Enabled {
		types = append(types, spec.TypeHelm)
	}
	if a.Compose.Enabled {
		types = append(types, spec.TypeCompose)
	}
	d := m.Device
	return margo.DeviceInfo{
		ID: m.DeviceID, Vendor: d.Vendor, ModelNumber: d.ModelNumber, SerialNumber: d.SerialNumber,
		Labels: d.Labels, Interfaces: d.Interfaces, Peripherals: d.Peripherals, OtelCollector: d.OtelCollector,
		DeploymentTypes: types, StoragePath: d.StoragePath,
	}
}

// Client returns the margo.Options of the configuration (CacheDir, Log,
// UserAgent are the caller's).
func (m *Margo) Client() margo.Options {
	o := margo.Options{
		URL: m.WFM, DeviceID: m.DeviceID, WFMID: m.WFMID, AllowTLS12: m.AllowTLS12, Timeout: m.Timeout,
		Identity: margo.Identity{CertFile: m.Identity.Cert, KeyFile: m.Identity.Key, TrustBundleFile: m.Identity.TrustBundle},
	}
	if tb := m.TrustBundle; tb != nil {
		o.TrustBundle = margo.TrustBundleOptions{URI: tb.URI, Discovery: tb.Discovery, Refresh: tb.Refresh, CAFile: tb.CAFile}
	}
	return o
}

// MargoBundleCache is the file the trust bundle fetched from the MIS is
// cached in: margo/trust-bundle.json under the state folder.
func (c *Config) MargoBundleCache() string {
	return filepath.Join(c.StateDir, "margo", "trust-bundle.json")
}

// margoTrustBundle parses margo.trustBundle.
func (p *parser) margoTrustBundle(mf fields, m *Margo) {
	const path = "margo.trustBundle"
	tf, tn := p.mapping(mf, "margo", "trustBundle", "uri", "discovery", "refresh", "caFile")
	if tf == nil {
		return
	}
	tb := &MargoTrustBundle{}
	m.TrustBundle = tb
	for _, x := range []struct {
		name string
		dst  *string
	}{{"uri", &tb.URI}, {"discovery", &tb.Discovery}} {
		if vn, v, ok := p.StrField(tf, path, x.name); ok {
			if err := margo.CheckTrustBundleURI(v); err != nil {
				p.Errorf(vn, join(path, x.name), "%v", err)
			} else {
				*x.dst = v
			}
		}
	}
	_, hasURI := tf["uri"]
	_, hasDisc := tf["discovery"]
	switch {
	case hasURI && hasDisc:
		p.Errorf(tf["discovery"].Key, path, "has both uri and discovery: give the trustBundleUri, or the MIS whose /.well-known/margo names it")
	case !hasURI && !hasDisc:
		p.Missing(tn, tn, path, "uri", " (the trustBundleUri, https://…; or discovery: https://MIS)")
	}
	if fv, ok := tf["refresh"]; ok {
		if v, ok := p.Duration(fv.Val, join(path, "refresh"), MinInterval); ok {
			tb.Refresh = v
		}
	}
	p.fileField(tf, path, "caFile", &tb.CAFile)
}

// margo parses the margo block.
func (p *parser) margo(f fields, c *Config) {
	const path = "margo"
	mf, node := p.mapping(f, "", "margo", "wfm", "deviceId", "identity", "wfmID", "trustBundle", "allowTLS12", "interval", "timeout",
		"windows", "verify", "insecureSkipVerify", "device", "statusQueue", "limits", "maxBandwidth", "credentials", "caFile", "insecure")
	if mf == nil {
		return
	}
	m := &Margo{Interval: DefaultMargoInterval, Timeout: DefaultMargoTimeout, StatusQueue: DefaultMargoStatusQueue,
		Limits: Limits{MaxSize: defaultLimits.MaxSize, MaxFiles: defaultLimits.MaxFiles}}
	c.Margo = m
	if _, ok := mf["wfm"]; !ok {
		p.Missing(node, node, path, "wfm", " (the WFM's base URL, such as https://wfm.plant.local)")
	} else if vn, v, ok := p.StrField(mf, path, "wfm"); ok {
		u, err := url.Parse(v)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			p.Errorf(vn, "margo.wfm", "must be an https:// URL such as https://wfm.plant.local (the Management Interface is HTTPS with mutual TLS), got %q", v)
		} else {
			m.WFM = v
		}
	}
	if _, ok := mf["deviceId"]; !ok {
		p.Missing(node, node, path, "deviceId", " (the device's id in the WFM)")
	} else if vn, v, ok := p.StrField(mf, path, "deviceId"); ok {
		if !spec.ValidDeviceID(v) || strings.Contains(v, "/") {
			p.Errorf(vn, "margo.deviceId", "must be letters, digits, '.', '_', '~' and '-', got %q", v)
		} else {
			m.DeviceID = v
		}
	}
	if idf, idn := p.mapping(mf, path, "identity", "cert", "key", "trustBundle"); idf != nil {
		for _, x := range []struct {
			name, what string
			dst        *string
		}{{"cert", "the device's X.509-SVID, PEM", &m.Identity.Cert}, {"key", "its private key, PEM", &m.Identity.Key}, {"trustBundle", "the trust domain's anchors, PEM or SPIFFE bundle", &m.Identity.TrustBundle}} {
			if _, ok := idf[x.name]; !ok {
				p.Missing(idn, idn, "margo.identity", x.name, " ("+x.what+")")
			}
			p.fileField(idf, "margo.identity", x.name, x.dst)
		}
	} else if _, ok := mf["identity"]; !ok {
		p.Missing(node, node, path, "identity", " (cert, key and trustBundle files)")
	}
	if vn, v, ok := p.StrField(mf, path, "wfmID"); ok {
		if err := checkWFMID(v); err != nil {
			p.Errorf(vn, "margo.wfmID", "%v", err)
		} else {
			m.WFMID = v
		}
	}
	p.margoTrustBundle(mf, m)
	p.boolean(mf, path, "allowTLS12", &m.AllowTLS12)
	for _, d := range []struct {
		name string
		dst  *time.Duration
		min  time.Duration
	}{{"interval", &m.Interval, MinInterval}, {"timeout", &m.Timeout, MinTimeout}} {
		if fv, ok := mf[d.name]; ok {
			if v, ok := p.Duration(fv.Val, join(path, d.name), d.min); ok {
				*d.dst = v
			}
		}
	}
	p.margoWindows(mf, m)
	src := &Source{}
	p.trust(node, path, mf, src)
	m.Verify, m.InsecureSkipVerify = src.Verify, src.InsecureSkipVerify
	p.margoDevice(mf, m)
	if fv, ok := mf["statusQueue"]; ok {
		if i, ok := p.Int(fv.Val, "margo.statusQueue"); ok {
			if i < 1 || i > MaxMargoStatusQueue {
				p.Errorf(fv.Val, "margo.statusQueue", "must be between 1 and %d, got %d", MaxMargoStatusQueue, i)
			} else {
				m.StatusQueue = int(i)
			}
		}
	}
	p.limits(mf, path, &m.Limits, false)
	p.bandwidth(mf, path, &m.MaxBandwidth)
	if cf, _ := p.mapping(mf, path, "credentials", "dockerConfig"); cf != nil {
		p.fileField(cf, join(path, "credentials"), "dockerConfig", &m.Credentials.DockerConfig)
	}
	p.fileField(mf, path, "caFile", &m.CAFile)
	p.boolean(mf, path, "insecure", &m.Insecure)
	if _, both := mf["caFile"]; both && m.Insecure {
		p.Errorf(mf["insecure"].Key, path, "has both caFile and insecure: plain HTTP uses no certificate, remove one of them")
	}
	for i, s := range c.Sources {
		if s.Name == MargoSource {
			p.Errorf(node, join(yamlstrict.Index("sources", i), "name"), "%q is the name of the Margo source: rename this source", MargoSource)
		}
	}
}

// checkWFMID checks a WFM SPIFFE ID: spiffe://<td>/margo/wfm/<wfm-id>.
func checkWFMID(s string) error {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return fmt.Errorf("%q is not a SPIFFE ID: %v", s, err)
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 3 || seg[0] != "margo" || seg[1] != "wfm" {
		return fmt.Errorf("must be a WFM SPIFFE ID spiffe://<trust-domain>/margo/wfm/<wfm-id>, got %q", s)
	}
	return nil
}

func (p *parser) margoWindows(mf fields, m *Margo) {
	wf, _ := p.mapping(mf, "margo", "windows", "polling", "downtime")
	if wf == nil {
		return
	}
	for _, x := range []struct {
		name string
		dst  *[]margo.Window
	}{{"polling", &m.Windows.Polling}, {"downtime", &m.Windows.Downtime}} {
		if fv, ok := wf[x.name]; ok {
			p.Strings(fv.Val, "margo.windows."+x.name, func(n *yaml.Node, path, s string) {
				w, err := margo.ParseWindow(s)
				if err != nil {
					p.Errorf(n, path, "%v", err)
					return
				}
				*x.dst = append(*x.dst, w)
			})
		}
	}
}

func (p *parser) margoDevice(mf fields, m *Margo) {
	const path = "margo.device"
	df, _ := p.mapping(mf, "margo", "device", "vendor", "modelNumber", "serialNumber", "labels", "interfaces", "peripherals", "otelCollector", "storagePath")
	if df == nil {
		return
	}
	d := &m.Device
	for _, x := range []struct {
		name string
		dst  *string
	}{{"vendor", &d.Vendor}, {"modelNumber", &d.ModelNumber}, {"serialNumber", &d.SerialNumber}} {
		if vn, v, ok := p.StrField(df, path, x.name); ok {
			if strings.TrimSpace(v) == "" {
				p.Errorf(vn, join(path, x.name), "must not be empty (leave it out to read it from the firmware)")
			}
			*x.dst = v
		}
	}
	if fv, ok := df["labels"]; ok && !yamlstrict.IsNull(fv.Val) && p.Kind(fv.Val, "margo.device.labels", yaml.MappingNode) {
		d.Labels = map[string]string{}
		p.Keys(fv.Val, "margo.device.labels", func(k, v *yaml.Node) {
			if s, ok := p.Str(v, "margo.device.labels."+k.Value); ok {
				d.Labels[k.Value] = s
			}
		})
	}
	if fv, ok := df["interfaces"]; ok {
		d.Interfaces = []string{}
		d.Interfaces = append(d.Interfaces, p.Strings(fv.Val, "margo.device.interfaces", func(n *yaml.Node, path, s string) {
			if !slices.Contains(spec.InterfaceTypes, s) {
				p.Errorf(n, path, "must be one of %s, got %q", strings.Join(spec.InterfaceTypes, ", "), s)
			}
		})...)
	}
	for i, pn := range p.ListField(df, path, "peripherals") {
		pp := yamlstrict.Index(join(path, "peripherals"), i)
		pf := p.Mapping(pn, pp, "type", "manufacturer", "model")
		if pf == nil {
			continue
		}
		per := spec.Peripheral{}
		if _, ok := pf["type"]; !ok {
			p.Missing(pn, pn, pp, "type", " ("+strings.Join(spec.PeripheralTypes, ", ")+")")
		} else if vn, v, ok := p.StrField(pf, pp, "type"); ok {
			if !slices.Contains(spec.PeripheralTypes, v) {
				p.Errorf(vn, join(pp, "type"), "must be one of %s, got %q", strings.Join(spec.PeripheralTypes, ", "), v)
			}
			per.Type = v
		}
		_, per.Manufacturer, _ = p.StrField(pf, pp, "manufacturer")
		_, per.Model, _ = p.StrField(pf, pp, "model")
		d.Peripherals = append(d.Peripherals, per)
	}
	p.boolean(df, path, "otelCollector", &d.OtelCollector)
	p.fileField(df, path, "storagePath", &d.StoragePath)
}

// checkMargo is Check's part for the margo block: the identity files load,
// the SVID chains to the bundle and is valid now (and not about to
// expire), its SPIFFE ID is a WFM client's and wfmID matches it; the
// verify keys load; storagePath is a folder.
func (c *Config) checkMargo(now time.Time, add func(path, format string, args ...any)) {
	m := c.Margo
	if m == nil {
		return
	}
	id := margo.Identity{CertFile: m.Identity.Cert, KeyFile: m.Identity.Key, TrustBundleFile: m.Identity.TrustBundle}
	if tb := m.TrustBundle; tb != nil {
		id.BundleCacheFile = c.MargoBundleCache()
		for _, u := range []struct{ name, v string }{{"uri", tb.URI}, {"discovery", tb.Discovery}} {
			if u.v != "" {
				if err := margo.CheckTrustBundleURI(u.v); err != nil {
					add("margo.trustBundle."+u.name, "%v", err)
				}
			}
		}
		if tb.CAFile != "" {
			if err := margo.CheckAnchorsFile(tb.CAFile); err != nil {
				add("margo.trustBundle.caFile", "%v", err)
			}
		}
	}
	_, err := margo.LoadIdentity(id, m.WFMID, now)
	if err != nil {
		path := "margo.identity.cert"
		if m.WFMID != "" && strings.Contains(err.Error(), "wfmID") || strings.Contains(err.Error(), "configured WFM SPIFFE ID") {
			path = "margo.wfmID"
		} else if strings.Contains(err.Error(), "trust bundle") && !strings.Contains(err.Error(), "does not verify") {
			path = "margo.identity.trustBundle"
		}
		add(path, "%s", strings.TrimPrefix(err.Error(), margo.ErrIdentity.Error()+": "))
	}
	if v := m.Verify; v != nil {
		for j, k := range v.Keys {
			kp := yamlstrict.Index("margo.verify.keys", j)
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
			if _, err := cosign.LoadTrustedRoot(kl.TrustedRoot); err != nil {
				add("margo.verify.keyless.trustedRoot", "%v", err)
			}
		}
	}
	if sp := m.Device.StoragePath; sp != "" {
		if err := dirExists(sp); err != nil {
			add("margo.device.storagePath", "%v", err)
		}
	}
	checkTransport(add, "margo", m.Credentials.DockerConfig, m.CAFile)
	if !c.Apply.Compose.Enabled && !c.Apply.Helm.Enabled {
		add("margo", "no applier is configured: add apply.compose or apply.helm, the deployment types reported to the WFM")
	}
}

func dirExists(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return errors.New(describe(err))
	}
	if !fi.IsDir() {
		return errors.New(p + " is not a folder")
	}
	return nil
}
