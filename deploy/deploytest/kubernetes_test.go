package deploytest

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/wxgate/wxgate/proxy"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/applyconfigurations"
	"sigs.k8s.io/yaml"
)

const baseDir = "../kubernetes/base"

// typeConverter validates built-in kinds against the schema client-go
// generates from the Kubernetes OpenAPI document (the one server-side
// apply uses): unknown fields, wrong scalar types, duplicate keys in keyed
// lists (two containers or ports of one name) are errors.
var typeConverter = applyconfigurations.NewTypeConverter(newScheme())

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// kustomization is the part of kustomize's Kustomization the base uses,
// decoded strictly: a field kustomize does not know would be an error there.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Resources []string `json:"resources"`
}

// base is the decoded manifests, one of each kind.
type base struct {
	configMap      *corev1.ConfigMap
	secret         *corev1.Secret
	deployment     *appsv1.Deployment
	services       []*corev1.Service
	pdb            *policyv1.PodDisruptionBudget
	serviceMonitor *monitoringv1.ServiceMonitor
	// entry and cmd are the image's ENTRYPOINT and CMD (the Dockerfile's),
	// which the container's command and args complete.
	entry, cmd []string
}

// dockerfileKey is the Dockerfile's key in readBase's map: the image the
// Deployment runs, checked with it.
const dockerfileKey = "../../Dockerfile"

// readImage sets b's entry and cmd from the Dockerfile's source.
func readImage(src []byte, b *base) error {
	stages, _, err := parseDockerfile(src)
	if err != nil || len(stages) == 0 {
		return fmt.Errorf("Dockerfile: %v", err)
	}
	b.entry, b.cmd = imageCommand(stages)
	return nil
}

// readBase reads the kustomization and every file it lists.
func readBase(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	entries, err := os.ReadDir(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(baseDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	b, err := os.ReadFile(dockerfileKey)
	if err != nil {
		t.Fatal(err)
	}
	files[dockerfileKey] = b
	return files
}

// checkBase returns every problem in the base's files: schema, strict
// decoding, names and labels, and how the pieces fit wxgate and each other.
func checkBase(t *testing.T, files map[string][]byte) []string {
	var bad []string
	add := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	var k kustomization
	if err := yaml.UnmarshalStrict(files["kustomization.yaml"], &k); err != nil {
		return []string{"kustomization.yaml: " + err.Error()}
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		add("kustomization.yaml: apiVersion/kind %s/%s", k.APIVersion, k.Kind)
	}
	for name := range files {
		if name != "kustomization.yaml" && strings.HasSuffix(name, ".yaml") && !slices.Contains(k.Resources, name) {
			add("%s: not listed in kustomization.yaml", name)
		}
	}
	var b base
	for _, name := range k.Resources {
		src, ok := files[name]
		if !ok {
			add("kustomization.yaml lists %s, which does not exist", name)
			continue
		}
		if err := decodeResource(name, src, &b); err != nil {
			add("%v", err)
		}
	}
	if err := readImage(files[dockerfileKey], &b); err != nil {
		add("%v", err)
	}
	if len(bad) > 0 {
		return bad
	}
	if b.configMap == nil || b.secret == nil || b.deployment == nil || b.pdb == nil || b.serviceMonitor == nil || len(b.services) != 2 {
		return append(bad, "the base needs a ConfigMap, a Secret, a Deployment, two Services, a PodDisruptionBudget and a ServiceMonitor")
	}
	return append(bad, checkFit(t, &b)...)
}

// decodeResource validates one manifest and stores it in b by kind.
func decodeResource(name string, src []byte, b *base) error {
	var obj map[string]any
	if err := yaml.UnmarshalStrict(src, &obj); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	u := &unstructured.Unstructured{Object: obj}
	gvk := u.GroupVersionKind()
	for _, msg := range validation.IsDNS1123Subdomain(u.GetName()) {
		return fmt.Errorf("%s: metadata.name %q: %s", name, u.GetName(), msg)
	}
	for key, v := range u.GetLabels() {
		for _, msg := range append(validation.IsQualifiedName(key), validation.IsValidLabelValue(v)...) {
			return fmt.Errorf("%s: label %s=%s: %s", name, key, v, msg)
		}
	}
	var into runtime.Object
	switch gvk.GroupKind().String() {
	case "ConfigMap":
		b.configMap = &corev1.ConfigMap{}
		into = b.configMap
	case "Secret":
		b.secret = &corev1.Secret{}
		into = b.secret
	case "Deployment.apps":
		b.deployment = &appsv1.Deployment{}
		into = b.deployment
	case "Service":
		s := &corev1.Service{}
		b.services = append(b.services, s)
		into = s
	case "PodDisruptionBudget.policy":
		b.pdb = &policyv1.PodDisruptionBudget{}
		into = b.pdb
	case "ServiceMonitor.monitoring.coreos.com":
		// Not a built-in kind: no schema in client-go; the operator's Go
		// type, decoded strictly, stands for its CRD's schema.
		b.serviceMonitor = &monitoringv1.ServiceMonitor{}
		if gvk.Version != "v1" {
			return fmt.Errorf("%s: ServiceMonitor version %s", name, gvk.Version)
		}
		return strictInto(name, src, b.serviceMonitor)
	default:
		return fmt.Errorf("%s: unexpected kind %s", name, gvk)
	}
	if _, err := typeConverter.ObjectToTyped(u); err != nil {
		return fmt.Errorf("%s: against the %s schema: %w", name, gvk, err)
	}
	return strictInto(name, src, into)
}

func strictInto(name string, src []byte, into any) error {
	if err := yaml.UnmarshalStrict(src, into); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// checkFit checks the pieces against wxgate and each other.
func checkFit(t *testing.T, b *base) []string {
	var bad []string
	add := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	d := b.deployment
	pod := labels.Set(d.Spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(pod) {
		add("deployment: selector %v does not match its pods' labels %v", d.Spec.Selector, pod)
	}
	var gw *corev1.Container
	for i, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "wxgate" {
			gw = &d.Spec.Template.Spec.Containers[i]
		}
	}
	if gw == nil {
		return append(bad, "deployment: no container named wxgate")
	}

	// The config wxgate reads: the ConfigMap, at the path the command the
	// kubelet runs names (the image's ENTRYPOINT, then the args), with
	// the environment the pod gives it.
	argv := podCommand(b.entry, b.cmd, gw.Command, gw.Args)
	cfgPath := ""
	if len(argv) == 4 && argv[0] == "/wxgate" && argv[1] == "serve" && argv[2] == "--config" {
		cfgPath = argv[3]
	} else {
		add("deployment: wxgate runs %q, not /wxgate serve --config FILE", argv)
	}
	mountedAt := ""
	for _, m := range gw.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == b.configMap.Name && m.SubPath == "" {
				mountedAt = m.MountPath
			}
		}
	}
	if cfgPath == "" || filepath.Dir(cfgPath) != mountedAt || b.configMap.Data[filepath.Base(cfgPath)] == "" {
		add("deployment: --config %q is not the ConfigMap's file (mounted at %q, without subPath)", cfgPath, mountedAt)
		return bad
	}
	cfg, files, err := podConfig(t, b, gw, b.configMap.Data[filepath.Base(cfgPath)], nil)
	if err != nil {
		return append(bad, "gateway.toml in the ConfigMap: "+err.Error())
	}
	for _, f := range files {
		if f != cfg.Tokens.SigningKeyFile && !mountedFile(d, gw, f, b.secret) {
			add("%s is not a key of the Secret mounted read-only into wxgate", f)
		}
	}
	for _, e := range gw.Env {
		// The admin token has no *_file form.
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.Name != cfg.Server.AdminTokenEnv {
			add("env %s: a secret in the environment; wxgate reads it from a file (*_file), which no process environment or crash report carries", e.Name)
		}
	}
	if cfg.Session.Store != "redis" && *d.Spec.Replicas > 1 {
		add("gateway.toml: %d replicas need store = \"redis\" (the memory store's sessions are each replica's own)", *d.Spec.Replicas)
	}
	if !mountedFile(d, gw, cfg.Tokens.SigningKeyFile, b.secret) {
		add("tokens.signing_key_file %s is not a key of the Secret mounted into wxgate", cfg.Tokens.SigningKeyFile)
	}
	grace := int64(30)
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	drain := cfg.Server.ShutdownDelayOrDefault() + cfg.Server.ShutdownTimeout
	if float64(grace) <= drain.Seconds() {
		add("terminationGracePeriodSeconds %d leaves no margin over shutdown_delay + shutdown_timeout (%v)", grace, drain)
	}

	// Ports: the public listener and the admin listener, by name.
	public, admin := portOf(cfg.Server.Listen), portOf(cfg.Server.AdminListen)
	named := map[string]int32{}
	for _, p := range gw.Ports {
		named[p.Name] = p.ContainerPort
		for _, msg := range validation.IsValidPortName(p.Name) {
			add("container port name %q: %s", p.Name, msg)
		}
	}
	if named["http"] != public || named["admin"] != admin {
		add("container ports http=%d admin=%d, but listen is %d and admin_listen %d", named["http"], named["admin"], public, admin)
	}
	if host, _, _ := net.SplitHostPort(cfg.Server.AdminListen); host == "127.0.0.1" || host == "localhost" || host == "::1" {
		add("admin_listen %s is loopback: the kubelet's probes and Prometheus come to the pod's IP", cfg.Server.AdminListen)
	}
	for _, l := range []struct{ key, addr string }{{"listen", cfg.Server.Listen}, {"admin_listen", cfg.Server.AdminListen}} {
		// The kubelet probes and Services reach the pod IP, which is IPv6
		// on IPv6 and some dual-stack clusters.
		if host, _, _ := net.SplitHostPort(l.addr); host == "0.0.0.0" {
			add("%s %s: IPv4 only, unreachable at an IPv6 pod IP (leave the host empty)", l.key, l.addr)
		}
	}
	if host, _, _ := net.SplitHostPort(cfg.Server.AdminListen); host != "127.0.0.1" && cfg.Server.AdminTokenEnv == "" {
		add("admin_listen beyond loopback needs admin_token_env (the admin API)")
	}
	resolve := func(p intOrName) int32 {
		if p.name != "" {
			return named[p.name]
		}
		return p.num
	}
	for _, pr := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"readinessProbe", gw.ReadinessProbe, "/readyz"}, {"livenessProbe", gw.LivenessProbe, "/healthz"}, {"startupProbe", gw.StartupProbe, "/healthz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			add("%s: missing, or not httpGet", pr.what)
			continue
		}
		g := pr.probe.HTTPGet
		if g.Path != pr.path || resolve(intOrName{g.Port.StrVal, g.Port.IntVal}) != admin {
			add("%s: %s on port %s, want %s on the admin port %d", pr.what, g.Path, g.Port.String(), pr.path, admin)
		}
		if pr.what == "readinessProbe" && pr.probe.TimeoutSeconds < 3 {
			add("readinessProbe: timeoutSeconds %d, but /readyz may take 2s to ping the store", pr.probe.TimeoutSeconds)
		}
	}

	// The upstream is the app in the same pod, on loopback.
	for _, u := range cfg.Upstreams {
		if !strings.HasPrefix(u.URL, "http://127.0.0.1:") {
			add("upstream %s: %s is not the pod's own app on 127.0.0.1", u.Name, u.URL)
		}
	}

	// Services: the public one reaches only the public port; the admin
	// one is headless and only the ServiceMonitor selects it.
	var adminSvc *corev1.Service
	for _, s := range b.services {
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(pod) || len(s.Spec.Selector) == 0 {
			add("service %s: selector %v does not match the pods", s.Name, s.Spec.Selector)
		}
		targets := map[int32]bool{}
		for _, p := range s.Spec.Ports {
			targets[resolve(intOrName{p.TargetPort.StrVal, p.TargetPort.IntVal})] = true
		}
		switch {
		case targets[admin] && len(targets) == 1 && s.Spec.ClusterIP == corev1.ClusterIPNone && s.Spec.Type != corev1.ServiceTypeLoadBalancer && s.Spec.Type != corev1.ServiceTypeNodePort:
			adminSvc = s
		case targets[admin]:
			add("service %s exposes the admin port %d (only a headless Service for the ServiceMonitor may)", s.Name, admin)
		case !targets[public] || len(targets) != 1:
			add("service %s: targets %v, want the public port %d alone", s.Name, targets, public)
		}
	}
	sm := b.serviceMonitor
	smSel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || smSel.Empty() {
		add("servicemonitor: selector %v", sm.Spec.Selector)
	} else {
		for _, s := range b.services {
			if smSel.Matches(labels.Set(s.Labels)) != (s == adminSvc) {
				add("servicemonitor selects service %s: want the admin Service alone", s.Name)
			}
		}
	}
	if adminSvc == nil {
		add("no headless admin Service for the ServiceMonitor")
	} else {
		for _, e := range sm.Spec.Endpoints {
			if e.Path != "/metrics" || !slices.ContainsFunc(adminSvc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
				add("servicemonitor endpoint %s%s: not /metrics on a port of %s", e.Port, e.Path, adminSvc.Name)
			}
		}
	}
	if len(sm.Spec.Endpoints) == 0 {
		add("servicemonitor: no endpoints")
	}

	// The PDB keeps one of the replicas.
	ps, err := metav1.LabelSelectorAsSelector(b.pdb.Spec.Selector)
	if err != nil || ps.Empty() || !ps.Matches(pod) {
		add("pdb: selector %v does not match the pods", b.pdb.Spec.Selector)
	}
	if m := b.pdb.Spec.MinAvailable; m == nil || m.IntValue() < 1 || int32(m.IntValue()) >= *d.Spec.Replicas {
		add("pdb: minAvailable %v with %d replicas: either nothing is protected or no pod can ever be evicted", m, *d.Spec.Replicas)
	}

	// A placeholder wxgate accepts would run in production with a token
	// anyone can read in this repository.
	if tok := b.secret.StringData["admin-token"] + string(b.secret.Data["admin-token"]); len(tok) >= 16 {
		add("secret.yaml: the admin-token placeholder %q is long enough for wxgate to accept it", tok)
	}
	if p := b.pdb.Spec.UnhealthyPodEvictionPolicy; p == nil || *p != policyv1.AlwaysAllow {
		add("pdb: unhealthyPodEvictionPolicy is not AlwaysAllow: a store outage makes every replica unready, and the budget would then block node drains")
	}

	// Non-root, as the image's USER.
	psc := d.Spec.Template.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 {
		add("pod securityContext: want runAsNonRoot and runAsUser 65532 (the image's USER)")
	}
	if sc := gw.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		add("wxgate securityContext: want readOnlyRootFilesystem and no privilege escalation")
	}
	if !memoryLimitKnown(gw) {
		add("wxgate: want a memory limit and GOMEMLIMIT from it (resourceFieldRef limits.memory), so the Go runtime collects before the OOM killer comes")
	}
	return append(bad, checkHardening(d, drain)...)
}

// memoryLimitKnown reports whether c has a memory limit that its Go
// runtime is told of, in bytes.
func memoryLimitKnown(c *corev1.Container) bool {
	if c.Resources.Limits.Memory().IsZero() {
		return false
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" || e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil {
			continue
		}
		r := e.ValueFrom.ResourceFieldRef
		// A divisor would make "256" of 256Mi, which GOMEMLIMIT reads as
		// 256 bytes.
		return r.Resource == "limits.memory" && (r.ContainerName == "" || r.ContainerName == c.Name) && (r.Divisor.IsZero() || r.Divisor.Value() == 1)
	}
	return false
}

// checkHardening checks what keeps a compromised container small and the
// app alive through wxgate's drain: no service account token, the
// runtime's seccomp profile, every container without capabilities or a
// way to gain privileges, and the app's preStop outlasting the drain
// inside the grace period.
func checkHardening(d *appsv1.Deployment, drain time.Duration) []string {
	var bad []string
	add := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	spec := &d.Spec.Template.Spec
	if a := spec.AutomountServiceAccountToken; a == nil || *a {
		add("pod: automountServiceAccountToken is not false (nothing in the pod calls the Kubernetes API)")
	}
	spread := false
	for _, c := range spec.TopologySpreadConstraints {
		sel, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
		spread = spread || c.TopologyKey == "kubernetes.io/hostname" && err == nil && !sel.Empty() && sel.Matches(labels.Set(d.Spec.Template.Labels))
	}
	if !spread {
		add("pod: no topologySpreadConstraints over kubernetes.io/hostname selecting its own pods: one node could hold every replica")
	}
	if psc := spec.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		add("pod securityContext: want seccompProfile RuntimeDefault")
	}
	grace := int64(30)
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 || sc.Privileged != nil && *sc.Privileged {
			add("container %s: want allowPrivilegeEscalation false and capabilities drop ALL, none added", c.Name)
		}
		if c.Name == "wxgate" {
			continue
		}
		// The app wxgate forwards to must serve until wxgate's drain ends.
		var sleep int64
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			sleep = c.Lifecycle.PreStop.Sleep.Seconds
		}
		if time.Duration(sleep)*time.Second < drain || sleep >= grace {
			add("container %s: preStop sleep %ds, want at least wxgate's drain (%v) and less than terminationGracePeriodSeconds %d", c.Name, sleep, drain, grace)
		}
	}
	return bad
}

type intOrName struct {
	name string
	num  int32
}

func portOf(addr string) int32 {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return int32(n)
}

// podConfig loads gateway.toml as wxgate serve would in the pod: every
// variable the container's env sets (from the Secret, each key checked to
// exist) and every Secret key mounted into it holds a well-formed dummy,
// and nothing else is set. The mounts are made under a temporary
// directory, and the config's paths into them moved there. files are the
// secret files the config names, as paths in the pod.
//
// value, if not nil, gives a Secret key's value instead of the dummy.
func podConfig(t *testing.T, b *base, c *corev1.Container, toml string, value func(key string) string) (cfg *proxy.Config, files []string, err error) {
	dummy := func(key string) string {
		if value != nil {
			return value(key)
		}
		if key == "session-key" {
			return base64.StdEncoding.EncodeToString(make([]byte, 32))
		}
		return "dummy-secret-value-" + strings.ToLower(key)
	}
	var env []string
	for _, e := range c.Env {
		v := e.Value
		if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
			ref := r.SecretKeyRef
			if ref.Name != b.secret.Name || !secretHas(b.secret, ref.Key) {
				return nil, nil, fmt.Errorf("env %s: no key %q in Secret %q", e.Name, ref.Key, ref.Name)
			}
			v = dummy(ref.Key)
		}
		env = append(env, e.Name+"="+v)
	}
	root := t.TempDir()
	for _, m := range c.VolumeMounts {
		for _, v := range b.deployment.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			if v.Secret.SecretName != b.secret.Name {
				return nil, nil, fmt.Errorf("volume %s: Secret %q is not the base's", v.Name, v.Secret.SecretName)
			}
			for _, it := range v.Secret.Items {
				if !secretHas(b.secret, it.Key) {
					return nil, nil, fmt.Errorf("volume %s: no key %q in Secret %q", v.Name, it.Key, b.secret.Name)
				}
				path := filepath.Join(root, m.MountPath, it.Path)
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					return nil, nil, err
				}
				if err := os.WriteFile(path, []byte(dummy(it.Key)+"\n"), 0o600); err != nil {
					return nil, nil, err
				}
			}
			toml = strings.ReplaceAll(toml, `"`+m.MountPath+"/", `"`+root+m.MountPath+"/")
		}
	}
	// Provision reads the secrets from the process's environment.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, proxy.EnvPrefix) {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	path := filepath.Join(t.TempDir(), "gateway.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		return nil, nil, err
	}
	cfg, _, err = proxy.LoadConfig(path, env)
	if err != nil {
		return nil, nil, err
	}
	if err := errors.Join(cfg.Provision(), cfg.Validate()); err != nil {
		return nil, nil, err
	}
	// Back to the pod's paths.
	inPod := func(p *string) {
		if *p != "" {
			*p = strings.TrimPrefix(*p, root)
			files = append(files, *p)
		}
	}
	inPod(&cfg.Tokens.SigningKeyFile)
	inPod(&cfg.Session.EncryptionKeyFile)
	inPod(&cfg.Session.Redis.PasswordFile)
	inPod(&cfg.Session.Redis.SentinelPasswordFile)
	for _, a := range []*string{&cfg.WeChat.OfficialAccount.SecretFile, &cfg.WeChat.Website.SecretFile, &cfg.WeChat.MiniProgram.SecretFile, &cfg.WeChat.MobileApp.SecretFile} {
		inPod(a)
	}
	return cfg, files, nil
}

func secretHas(s *corev1.Secret, key string) bool {
	_, inData := s.Data[key]
	_, inString := s.StringData[key]
	return inData || inString
}

// mountedFile says whether path is a key of secret, mounted read-only into c.
func mountedFile(d *appsv1.Deployment, c *corev1.Container, path string, secret *corev1.Secret) bool {
	for _, m := range c.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != secret.Name || !m.ReadOnly {
				continue
			}
			for _, it := range v.Secret.Items {
				_, inString := secret.StringData[it.Key]
				_, inData := secret.Data[it.Key]
				if filepath.Join(m.MountPath, it.Path) == path && (inString || inData) {
					return true
				}
			}
		}
	}
	return false
}

func TestKubernetesBase(t *testing.T) {
	for _, p := range checkBase(t, readBase(t)) {
		t.Error(p)
	}
}

// TestPlaceholdersRefused: the shipped Secret, applied without filling
// in its placeholders, keeps wxgate from starting: the session key is not
// one and the admin token too short. A placeholder wxgate accepted would
// run with a secret anyone can read in this repository.
func TestPlaceholdersRefused(t *testing.T) {
	files := readBase(t)
	var b base
	for _, name := range []string{"configmap.yaml", "secret.yaml", "deployment.yaml"} {
		if err := decodeResource(name, files[name], &b); err != nil {
			t.Fatal(err)
		}
	}
	var gw *corev1.Container
	for i, c := range b.deployment.Spec.Template.Spec.Containers {
		if c.Name == "wxgate" {
			gw = &b.deployment.Spec.Template.Spec.Containers[i]
		}
	}
	placeholder := func(key string) string { return b.secret.StringData[key] + string(b.secret.Data[key]) }
	_, _, err := podConfig(t, &b, gw, b.configMap.Data["gateway.toml"], placeholder)
	for _, want := range []string{"session.encryption_key_file", "server.admin_token_env"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("the config with the Secret's placeholders: %v; want a problem with %s", err, want)
		}
	}
}
