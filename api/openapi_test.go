package api

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// TestOpenAPICoversRoutes walks the router and checks that every (method,
// path) is in openapi.json, and that the document names no route the router
// lacks.
func TestOpenAPICoversRoutes(t *testing.T) {
	t.Parallel()
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi %q, want 3.1.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}

	s := newTestServer(t)
	routed := map[string]bool{}
	err := s.router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		path, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			return err
		}
		for _, m := range methods {
			routed[m+" "+path] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	if len(routed) < 20 {
		t.Fatalf("only %d routes found: %v", len(routed), routed)
	}
	for _, r := range sortedKeys(routed) {
		if !documented[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range sortedKeys(documented) {
		if !routed[d] {
			t.Errorf("openapi.json documents %s, which the router does not serve", d)
		}
	}
}

// TestOpenAPIRefsResolve checks every $ref points at a defined component.
func TestOpenAPIRefsResolve(t *testing.T) {
	t.Parallel()
	var root map[string]any
	if err := json.Unmarshal(openapiJSON, &root); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				var node any = root
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, ok := node.(map[string]any)
					if !ok || m[part] == nil {
						t.Errorf("unresolved $ref %s", ref)
						return
					}
					node = m[part]
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(root)
}

// TestOpenAPIDeliverySchemas pins the documented status, attempt and redrive
// documents to the structs the handlers encode: the same properties, every
// one of them required except those the handler omits when empty.
func TestOpenAPIDeliverySchemas(t *testing.T) {
	t.Parallel()
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Required   []string                   `json:"required"`
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{"RouteStatus": statusJSON{}, "Attempt": attemptJSON{}, "RedriveResult": redriveJSON{}, "AttemptList": attemptList{}} {
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("openapi.json has no schema %s", name)
			continue
		}
		all, required := jsonFields(reflect.TypeOf(v))
		if got := sortedKeys(boolSet(keysOf(schema.Properties))); !slices.Equal(got, all) {
			t.Errorf("schema %s properties %v, the handler writes %v", name, got, all)
		}
		if got := sortedKeys(boolSet(schema.Required)); !slices.Equal(got, required) {
			t.Errorf("schema %s requires %v, the handler always writes %v", name, got, required)
		}
	}
	// Nothing answers 501 any more.
	for path, item := range doc.Paths {
		for method, op := range item {
			if strings.Contains(string(op), `"501"`) {
				t.Errorf("%s %s still documents 501", strings.ToUpper(method), path)
			}
		}
	}
}

// jsonFields lists a struct's JSON names, and those without omitempty.
func jsonFields(typ reflect.Type) (all, required []string) {
	for i := range typ.NumField() {
		tag := typ.Field(i).Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	sort.Strings(all)
	sort.Strings(required)
	return all, required
}

func keysOf(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func boolSet(s []string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, k := range s {
		m[k] = true
	}
	return m
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func newTestServer(t *testing.T) *Server {
	t.Helper()
	deps, _ := testDeps(t, backends()[0].open(t))
	s, err := New(Config{Logger: quietLogger(), Registry: prometheus.NewRegistry()}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
