package deploytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestKustomizeBuild builds the base with kustomize's own library, as
// `kubectl apply -k` would, and puts every object it emits through the
// same schema and fit checks as the files: what reaches the cluster is
// what was checked.
func TestKustomizeBuild(t *testing.T) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), baseDir)
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	var b base
	src, err := os.ReadFile(dockerfileKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := readImage(src, &b); err != nil {
		t.Fatal(err)
	}
	for _, r := range m.Resources() {
		src, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeResource(r.GetKind()+" "+r.GetName(), src, &b); err != nil {
			t.Error(err)
		}
		if r.GetLabels()["app.kubernetes.io/part-of"] != "wxgate-example" {
			t.Errorf("%s %s: kustomization's labels not applied: %v", r.GetKind(), r.GetName(), r.GetLabels())
		}
	}
	if t.Failed() {
		return
	}
	if len(m.Resources()) != 7 || len(b.services) != 2 || b.deployment == nil || b.configMap == nil || b.secret == nil || b.pdb == nil || b.serviceMonitor == nil {
		t.Fatalf("kustomize built %d objects, want the 7 of the base", len(m.Resources()))
	}
	for _, p := range checkFit(t, &b) {
		t.Error("built: " + p)
	}
}

// TestKustomizeBuildFails wants kustomize itself to refuse a broken base
// (a misspelt field, a missing resource), so that the build above is a
// check and not a formality.
func TestKustomizeBuildFails(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"misspelt field", "resources:", "resource:", `unknown field "resource"`},
		{"missing resource", "  - pdb.yaml\n", "  - pdb.yaml\n  - hpa.yaml\n", "hpa.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, src := range readBase(t) {
				if name == dockerfileKey {
					continue
				}
				if name == "kustomization.yaml" {
					mut := strings.Replace(string(src), tc.from, tc.to, 1)
					if mut == string(src) {
						t.Fatalf("no %q to mutate", tc.from)
					}
					src = []byte(mut)
				}
				if err := os.WriteFile(filepath.Join(dir, name), src, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("kustomize: want an error with %q, got %v", tc.want, err)
			}
		})
	}
}
