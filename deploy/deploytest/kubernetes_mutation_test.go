package deploytest

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// TestKubernetesBaseChecksFail breaks the real manifests in each way the
// checks exist for, one at a time, and wants each break reported.
func TestKubernetesBaseChecksFail(t *testing.T) {
	for _, tc := range []struct{ name, file, from, to, want string }{
		{"unknown field", "deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 45\n      terminationGraceSeconds: 45", "deployment.yaml"},
		{"wrong type", "deployment.yaml", "replicas: 2", "replicas: two", "deployment.yaml"},
		{"duplicate container port", "deployment.yaml", "containerPort: 9090", "containerPort: 8080", "deployment.yaml"},
		{"bad name", "service.yaml", "name: wxgate\n", "name: WXGate_Public\n", "metadata.name"},
		{"servicemonitor unknown field", "servicemonitor.yaml", "interval: 30s", "intervall: 30s", "servicemonitor.yaml"},
		{"unlisted file", "kustomization.yaml", "  - pdb.yaml\n", "", "pdb.yaml: not listed"},
		{"missing file", "kustomization.yaml", "  - pdb.yaml\n", "  - pdb.yaml\n  - hpa.yaml\n", "hpa.yaml, which does not exist"},
		{"admin on loopback", "configmap.yaml", `admin_listen = ":9090"`, `admin_listen = "127.0.0.1:9090"`, "is loopback"},
		{"admin on IPv4 only", "configmap.yaml", `admin_listen = ":9090"`, `admin_listen = "0.0.0.0:9090"`, "IPv4 only"},
		{"public on IPv4 only", "configmap.yaml", `listen = ":8080"`, `listen = "0.0.0.0:8080"`, "IPv4 only"},
		{"config invalid", "configmap.yaml", `default = "login"`, `default = "sometimes"`, "gateway.toml in the ConfigMap"},
		{"config unknown key", "configmap.yaml", `watch_config = true`, `watch_configs = true`, "unknown key"},
		{"secret file misnamed", "configmap.yaml", `secret_file = "/var/run/secrets/wxgate/app-secret"`, `secret_file = "/var/run/secrets/wxgate/app-secret2"`, "app-secret2"},
		{"secret file not mounted", "deployment.yaml", "              - {key: app-secret, path: app-secret}\n", "", "app-secret"},
		{"secret key missing", "secret.yaml", "  app-secret:", "  app-secretx:", `no key "app-secret"`},
		{"memory store", "configmap.yaml", "store = \"redis\"\n", "store = \"memory\"\n", "store is \"memory\""},
		{"signing key elsewhere", "configmap.yaml", `/var/run/secrets/wxgate/signing-key.pem`, `/var/run/secrets/wxgate/key.pem`, "signing_key_file"},
		{"grace too short", "deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds 30"},
		{"probe on public port", "deployment.yaml", "httpGet: {path: /readyz, port: admin}", "httpGet: {path: /readyz, port: http}", "readinessProbe"},
		{"probe wrong path", "deployment.yaml", "httpGet: {path: /healthz, port: admin}\n            periodSeconds: 10", "httpGet: {path: /health, port: admin}\n            periodSeconds: 10", "livenessProbe"},
		{"public service exposes admin", "service.yaml", "targetPort: http", "targetPort: admin", "exposes the admin port"},
		{"admin service not headless", "service-admin.yaml", "  clusterIP: None\n", "", "exposes the admin port"},
		{"service selector misses", "service.yaml", "  selector:\n    app.kubernetes.io/name: wxgate", "  selector:\n    app.kubernetes.io/name: wxgat", "does not match the pods"},
		{"deployment selector misses", "deployment.yaml", "    matchLabels:\n      app.kubernetes.io/name: wxgate", "    matchLabels:\n      app.kubernetes.io/name: other", "deployment: selector"},
		{"pdb selector misses", "pdb.yaml", "      app.kubernetes.io/name: wxgate\n", "      app.kubernetes.io/name: other\n", "pdb: selector"},
		{"pdb blocks eviction", "pdb.yaml", "minAvailable: 1", "minAvailable: 2", "no pod can ever be evicted"},
		{"monitor selects public", "servicemonitor.yaml", "      app.kubernetes.io/component: admin\n", "", "servicemonitor selects service wxgate"},
		{"monitor wrong port", "servicemonitor.yaml", "- port: admin", "- port: http", "servicemonitor endpoint"},
		{"root", "deployment.yaml", "runAsUser: 65532", "runAsUser: 0", "runAsUser 65532"},
		{"writable root", "deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"upstream off the pod", "configmap.yaml", `url = "http://127.0.0.1:3000"`, `url = "http://app.default.svc:3000"`, "not the pod's own app"},
		{"command in the image's entrypoint", dockerfileKey, "ENTRYPOINT [\"/wxgate\"]\nCMD [\"serve\", \"--config\", \"/etc/wxgate/gateway.toml\"]", `ENTRYPOINT ["/wxgate", "serve", "--config", "/etc/wxgate/gateway.toml"]`, "not /wxgate serve --config FILE"},
		{"command replaces the entrypoint", "deployment.yaml", `args: ["serve", "--config", "/etc/wxgate/gateway.toml"]`, `command: ["serve", "--config", "/etc/wxgate/gateway.toml"]`, "not /wxgate serve --config FILE"},
		{"service account token", "deployment.yaml", "automountServiceAccountToken: false", "automountServiceAccountToken: true", "automountServiceAccountToken"},
		{"no seccomp", "deployment.yaml", "        seccompProfile:\n          type: RuntimeDefault\n", "", "seccompProfile RuntimeDefault"},
		{"wxgate keeps capabilities", "deployment.yaml", "            readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false\n            capabilities:\n              drop: [\"ALL\"]", "            readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false\n            capabilities:\n              drop: [\"NET_RAW\"]", "container wxgate: want"},
		{"app escalates", "deployment.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "container app: want"},
		{"app stops before the drain", "deployment.yaml", "seconds: 30", "seconds: 10", "preStop sleep 10s"},
		{"no memory limit", "deployment.yaml", "            limits: {memory: 256Mi}\n", "", "GOMEMLIMIT"},
		{"gomemlimit in MiB", "deployment.yaml", "resource: limits.memory}", "resource: limits.memory, divisor: 1Mi}", "GOMEMLIMIT"},
		{"startup probe on public port", "deployment.yaml", "httpGet: {path: /healthz, port: admin}\n            periodSeconds: 1\n", "httpGet: {path: /healthz, port: http}\n            periodSeconds: 1\n", "startupProbe"},
		{"pdb keeps unready pods", "pdb.yaml", "  unhealthyPodEvictionPolicy: AlwaysAllow\n", "", "unhealthyPodEvictionPolicy"},
		{"spread selects nothing", "deployment.yaml", "            matchLabels:\n              app.kubernetes.io/name: wxgate\n      securityContext", "            matchLabels:\n              app.kubernetes.io/name: other\n      securityContext", "topologySpreadConstraints"},
		{"admin token placeholder accepted", "secret.yaml", `admin-token: "REPLACE-ME"`, `admin-token: "REPLACE-at-least-16-characters"`, "admin-token placeholder"},
		{"config path", "deployment.yaml", `args: ["serve", "--config", "/etc/wxgate/gateway.toml"]`, `args: ["serve", "--config", "/etc/gateway.toml"]`, "is not the ConfigMap's file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := readBase(t)
			orig := string(files[tc.file])
			mut := strings.Replace(orig, tc.from, tc.to, 1)
			if mut == orig {
				t.Fatalf("%s has no %q to mutate", tc.file, tc.from)
			}
			files[tc.file] = []byte(mut)
			probs := checkBase(t, files)
			if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("not caught: want a problem with %q, got %q", tc.want, probs)
			}
		})
	}
}

// TestSecretInEnvironmentCaught: a secret moved back into the
// environment (the config's *_env and the container's env together, so
// that the config still loads) is reported.
func TestSecretInEnvironmentCaught(t *testing.T) {
	files := readBase(t)
	cm := strings.Replace(string(files["configmap.yaml"]), `secret_file = "/var/run/secrets/wxgate/app-secret"`, `secret_env = "WXGATE_APP_SECRET"`, 1)
	dep := strings.Replace(string(files["deployment.yaml"]), "            - name: WXGATE_ADMIN_TOKEN\n",
		"            - name: WXGATE_APP_SECRET\n              valueFrom:\n                secretKeyRef: {name: wxgate-secrets, key: app-secret}\n            - name: WXGATE_ADMIN_TOKEN\n", 1)
	if cm == string(files["configmap.yaml"]) || dep == string(files["deployment.yaml"]) {
		t.Fatal("nothing to mutate")
	}
	files["configmap.yaml"], files["deployment.yaml"] = []byte(cm), []byte(dep)
	probs := checkBase(t, files)
	if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, "env WXGATE_APP_SECRET: a secret in the environment") }) {
		t.Errorf("not caught: %q", probs)
	}
}

// TestKubernetesSchemaAlone shows that the OpenAPI-derived schema, not
// only the strict decoding into Go types, rejects what the API server
// would: an unknown field, a wrong type, two containers of one name.
func TestKubernetesSchemaAlone(t *testing.T) {
	src := readBase(t)["deployment.yaml"]
	for _, tc := range []struct{ name, from, to, want string }{
		{"unknown field", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 45\n      hostNetwerk: true", "field not declared in schema"},
		{"wrong type", "replicas: 2", "replicas: \"2\"", "expected numeric"},
		{"duplicate container", "- name: wxgate\n", "- name: app\n", "duplicate entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mut := strings.Replace(string(src), tc.from, tc.to, 1)
			if mut == string(src) {
				t.Fatalf("no %q to mutate", tc.from)
			}
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(mut), &obj); err != nil {
				t.Fatal(err)
			}
			_, err := typeConverter.ObjectToTyped(&unstructured.Unstructured{Object: obj})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("schema: want an error with %q, got %v", tc.want, err)
			}
		})
	}
	var obj map[string]any
	if err := yaml.Unmarshal(src, &obj); err != nil {
		t.Fatal(err)
	}
	if _, err := typeConverter.ObjectToTyped(&unstructured.Unstructured{Object: obj}); err != nil {
		t.Errorf("the real deployment.yaml: %v", err)
	}
}
