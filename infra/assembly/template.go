package assembly

import (
	"fmt"
	"sort"
	"strings"
)

// Template is one CloudFormation template.
type Template struct {
	Name      string
	File      string
	Resources map[string]Resource
	Outputs   map[string]map[string]any
	Raw       map[string]any
}

// Resource is one template resource.
type Resource struct {
	ID         string
	Type       string
	Properties map[string]any
	DependsOn  []string
	Raw        map[string]any
}

// ReadTemplate loads the template at path.
func ReadTemplate(path string) (*Template, error) {
	var raw map[string]any
	if err := readJSON(path, &raw); err != nil {
		return nil, err
	}
	t := &Template{File: path, Raw: raw, Resources: map[string]Resource{}, Outputs: map[string]map[string]any{}}
	res, _ := raw["Resources"].(map[string]any)
	for id, v := range res {
		r, _ := v.(map[string]any)
		props, _ := r["Properties"].(map[string]any)
		typ, _ := r["Type"].(string)
		var deps []string
		switch d := r["DependsOn"].(type) {
		case string:
			deps = []string{d}
		case []any:
			for _, x := range d {
				s, _ := x.(string)
				deps = append(deps, s)
			}
		}
		t.Resources[id] = Resource{ID: id, Type: typ, Properties: props, DependsOn: deps, Raw: r}
	}
	outs, _ := raw["Outputs"].(map[string]any)
	for id, v := range outs {
		o, _ := v.(map[string]any)
		t.Outputs[id] = o
	}
	return t, nil
}

// OfType returns the resources of type typ, sorted by logical ID.
func (t *Template) OfType(typ string) []Resource {
	var rs []Resource
	for _, r := range t.Resources {
		if r.Type == typ {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].ID < rs[j].ID })
	return rs
}

// One returns the only resource of type typ whose logical ID contains part.
func (t *Template) One(typ, part string) (Resource, error) {
	var found []Resource
	for _, r := range t.OfType(typ) {
		if strings.Contains(r.ID, part) {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		ids := make([]string, 0, len(found))
		for _, r := range found {
			ids = append(ids, r.ID)
		}
		return Resource{}, fmt.Errorf("%s: want one %s with %q in its ID, found %d %v", t.Name, typ, part, len(found), ids)
	}
	return found[0], nil
}
