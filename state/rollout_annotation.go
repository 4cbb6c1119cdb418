package state

import (
	"encoding/json"
	"fmt"
)

// RolloutAnnotation is the manifest annotation `berth push` copies a
// release's rollout plan into, as JSON (Rollout.Annotation). The
// release's signature covers the manifest, so it is signed like berth.yaml;
// it lets a device place itself in the plan before it downloads the layer
// (the agent spreads the downloads of later waves with it). berth.yaml's
// plan stays the one that decides when a device adopts the release.
const RolloutAnnotation = "dev.berth.rollout"

// maxRolloutAnnotation bounds the annotation ParseRolloutAnnotation reads:
// MaxWaves waves with their selectors fit in far less.
const maxRolloutAnnotation = 64 << 10

// annotationWave is a wave as the annotation holds it.
type annotationWave struct {
	Name     string            `json:"name"`
	Selector map[string]string `json:"selector,omitempty"`
	Percent  float64           `json:"percent,omitempty"`
	After    string            `json:"after,omitempty"`
}

// Annotation encodes the plan for RolloutAnnotation: a JSON document that
// ParseRolloutAnnotation reads back, such as
// {"waves":[{"name":"canary","selector":{"ring":"canary"}},{"name":"all","percent":100,"after":"2h0m0s"}]}.
func (r *Rollout) Annotation() string {
	doc := struct {
		Waves []annotationWave `json:"waves"`
	}{Waves: make([]annotationWave, len(r.Waves))}
	for i, w := range r.Waves {
		doc.Waves[i] = annotationWave{Name: w.Name, Selector: w.Selector, Percent: w.Percent}
		if w.After > 0 {
			doc.Waves[i].After = w.After.String()
		}
	}
	b, err := json.Marshal(doc)
	if err != nil { // strings, a float and maps of strings always encode
		panic(fmt.Sprintf("state: encode rollout plan: %v", err))
	}
	return string(b)
}

// ParseRolloutAnnotation parses the value of RolloutAnnotation with the
// rules of berth.yaml's rollout (JSON is YAML): the same guarantees as
// Parse gives a plan.
func ParseRolloutAnnotation(value string) (*Rollout, error) {
	if len(value) > maxRolloutAnnotation {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d a plan of %d waves needs", RolloutAnnotation, len(value), maxRolloutAnnotation, MaxWaves)
	}
	p := &parser{}
	p.File = RolloutAnnotation
	root := p.Document([]byte(value), "a rollout plan needs waves", RolloutAnnotation)
	if root == nil {
		return nil, p.Err()
	}
	r := p.rollout(root)
	if p.Failed() {
		return nil, p.Err()
	}
	if r == nil {
		return nil, fmt.Errorf("%s: null: a rollout plan needs waves", RolloutAnnotation)
	}
	return r, nil
}
