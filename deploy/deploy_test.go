// Package deploy_test checks the deployment files under deploy/ and the
// repository's docker-compose.yml without a cluster or a Docker engine: the
// Kubernetes manifests of deploy/k8s are decoded strictly into the real API
// types (an unknown or misspelt field is an error), then checked for what a
// production rollout needs (probes, resources, security settings, pinned
// images, the beat Deployment and its PodDisruptionBudget, the migrate and
// streams Jobs, the Secret keys documented in kustomization.yaml).
package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	k8sDir        = "k8s"
	kustomizeFile = "kustomization.yaml"
	// secretName is the one Secret the pods read (see kustomization.yaml).
	secretName = "flotilla"
	// configMapName holds deploy/config/base.yaml as base.yaml.
	configMapName = "flotilla-config"
)

// manifest is one decoded YAML document of a file in deploy/k8s.
type manifest struct {
	file string // e.g. deploy/k8s/beat.yaml
	doc  int    // 1-based index of the document in file
	kind string
	name string
	obj  any // *appsv1.Deployment, *batchv1.Job, ...
}

func (m manifest) String() string {
	return fmt.Sprintf("%s (document %d): %s %q", m.file, m.doc, m.kind, m.name)
}

// kustomization is the part of kustomization.yaml this repository uses;
// decoded strictly, so a field kustomize knows but this struct does not must
// be added here first.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

type cluster struct {
	manifests []manifest
	files     []string // manifest files of deploy/k8s (no kustomization.yaml), sorted
	kust      kustomization
	header    string // the leading comment block of kustomization.yaml
}

// newObject returns an empty object of the API type for apiVersion and kind.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, true
	case "batch/v1 Job":
		return &batchv1.Job{}, true
	case "v1 Service":
		return &corev1.Service{}, true
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, true
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	}
	return nil, false
}

// loadedCluster decodes deploy/k8s once for all tests.
var loadedCluster = sync.OnceValues(decodeCluster)

// loadCluster returns the decoded manifests of deploy/k8s, or stops the test
// if any of them does not decode: TestK8sManifestsDecodeStrictly reports why,
// and the other checks would only repeat it.
func loadCluster(t *testing.T) cluster {
	t.Helper()
	c, err := loadedCluster()
	if err != nil {
		t.Fatal("deploy/k8s does not decode strictly: see TestK8sManifestsDecodeStrictly")
	}
	return c
}

// decodeCluster decodes every document of every file in deploy/k8s strictly.
func decodeCluster() (cluster, error) {
	var c cluster
	entries, err := os.ReadDir(k8sDir)
	if err != nil {
		return c, err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || name == kustomizeFile {
			continue
		}
		if ext := filepath.Ext(name); ext != ".yaml" && ext != ".yml" {
			continue
		}
		c.files = append(c.files, name)
		ms, err := decodeFile(filepath.Join(k8sDir, name))
		if err != nil {
			errs = append(errs, err)
		}
		c.manifests = append(c.manifests, ms...)
	}
	kpath := filepath.Join(k8sDir, kustomizeFile)
	data, err := os.ReadFile(kpath)
	if err != nil {
		return c, err
	}
	if err := unmarshalStrict(data, &c.kust); err != nil {
		errs = append(errs, fmt.Errorf("deploy/%s: %w", filepath.ToSlash(kpath), err))
	}
	var header []string
	for line := range strings.Lines(string(data)) {
		if !strings.HasPrefix(line, "#") {
			break
		}
		header = append(header, line)
	}
	c.header = strings.Join(header, "")
	return c, errors.Join(errs...)
}

func decodeFile(file string) ([]manifest, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	path := "deploy/" + filepath.ToSlash(file) // as seen from the repository root
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []manifest
	var errs []error
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("%s (document %d): %w", path, i, err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (document %d): %w", path, i, err))
			continue
		}
		if s := string(bytes.TrimSpace(j)); s == "null" || s == "" {
			continue // only comments
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			errs = append(errs, fmt.Errorf("%s (document %d): %w", path, i, err))
			continue
		}
		obj, ok := newObject(tm.APIVersion, tm.Kind)
		if !ok {
			errs = append(errs, fmt.Errorf("%s (document %d): apiVersion %q kind %q: not known to deploy_test.go (add it to newObject)",
				path, i, tm.APIVersion, tm.Kind))
			continue
		}
		if err := unmarshalStrict(doc, obj); err != nil {
			errs = append(errs, fmt.Errorf("%s (document %d): %s: %w", path, i, tm.Kind, err))
			continue
		}
		name := obj.(metav1.Object).GetName()
		if name == "" {
			errs = append(errs, fmt.Errorf("%s (document %d): %s: metadata.name is empty", path, i, tm.Kind))
		}
		out = append(out, manifest{file: path, doc: i, kind: tm.Kind, name: name, obj: obj})
	}
	return out, errors.Join(errs...)
}

// unmarshalStrict decodes YAML the way the API server's strict field
// validation does (kubectl apply --validate=strict): field names are
// case-sensitive, and unknown or duplicate fields are errors.
// sigs.k8s.io/yaml's UnmarshalStrict alone would accept a miscased field such
// as readOnlyRootFileSystem (encoding/json matches names case-insensitively).
func unmarshalStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func objectsOf[T any](c cluster) ([]manifest, []*T) {
	var ms []manifest
	var objs []*T
	for _, m := range c.manifests {
		if o, ok := m.obj.(*T); ok {
			ms = append(ms, m)
			objs = append(objs, o)
		}
	}
	return ms, objs
}

// shutdownTimeout reads shutdown_timeout from the ConfigMap's base.yaml.
func shutdownTimeout(t *testing.T, c cluster) time.Duration {
	t.Helper()
	ms, cms := objectsOf[corev1.ConfigMap](c)
	for i, cm := range cms {
		if cm.Name != configMapName {
			continue
		}
		var cfg struct {
			ShutdownTimeout string `json:"shutdown_timeout"`
		}
		if err := yaml.Unmarshal([]byte(cm.Data["base.yaml"]), &cfg); err != nil {
			t.Fatalf("%s: data[base.yaml]: %v", ms[i], err)
		}
		if cfg.ShutdownTimeout == "" {
			return 25 * time.Second // the code default
		}
		d, err := time.ParseDuration(cfg.ShutdownTimeout)
		if err != nil {
			t.Fatalf("%s: data[base.yaml].shutdown_timeout: %v", ms[i], err)
		}
		return d
	}
	t.Fatalf("no ConfigMap %q in deploy/k8s", configMapName)
	return 0
}

func TestK8sManifestsDecodeStrictly(t *testing.T) {
	c, err := loadedCluster()
	if err != nil {
		t.Fatalf("decode deploy/k8s strictly into the Kubernetes API types:\n%v", err)
	}
	if len(c.manifests) == 0 {
		t.Fatal("no manifests in deploy/k8s")
	}
	seen := map[string]manifest{}
	for _, m := range c.manifests {
		key := m.kind + "/" + m.name
		if prev, ok := seen[key]; ok {
			t.Errorf("%s: same kind and name as %s", m, prev)
		}
		seen[key] = m
		if ns := m.obj.(metav1.Object).GetNamespace(); ns != "" {
			t.Errorf("%s: metadata.namespace %q: the manifests are namespace-free (kubectl apply -n NS -k)", m, ns)
		}
	}
}

func TestK8sKustomizationResources(t *testing.T) {
	c := loadCluster(t)
	if c.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || c.kust.Kind != "Kustomization" {
		t.Errorf("deploy/k8s/%s: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization",
			kustomizeFile, c.kust.APIVersion, c.kust.Kind)
	}
	listed := map[string]bool{}
	for _, r := range c.kust.Resources {
		if listed[r] {
			t.Errorf("deploy/k8s/%s: resources: %q listed twice", kustomizeFile, r)
		}
		listed[r] = true
		if _, err := os.Stat(filepath.Join(k8sDir, r)); err != nil {
			t.Errorf("deploy/k8s/%s: resources: %q does not exist: %v", kustomizeFile, r, err)
		}
	}
	for _, f := range c.files {
		if !listed[f] {
			t.Errorf("deploy/k8s/%s: resources: manifest %q is not listed, so kubectl apply -k skips it", kustomizeFile, f)
		}
	}
}

func TestK8sImagesPinned(t *testing.T) {
	c := loadCluster(t)
	byName := map[string]string{} // image name → newTag
	for i, img := range c.kust.Images {
		byName[img.Name] = img.NewTag
		if img.NewTag == "latest" || (img.NewTag == "" && img.Digest == "") {
			t.Errorf("deploy/k8s/%s: images[%d] (%s): newTag %q: pin a release tag (or a digest)", kustomizeFile, i, img.Name, img.NewTag)
		}
	}
	forEachContainer(c, func(m manifest, field string, _ *corev1.PodSpec, ctr *corev1.Container) {
		name, tag := splitImage(ctr.Image)
		if tag == "" || tag == "latest" {
			t.Errorf("%s: %s.image %q: pin a tag (not latest)", m, field, ctr.Image)
		}
		if _, ok := byName[name]; !ok {
			t.Errorf("%s: %s.image %q: no entry for %q in deploy/k8s/%s images:, so its registry and tag cannot be set there",
				m, field, ctr.Image, name, kustomizeFile)
		}
		if ctr.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s: %s.imagePullPolicy %q, want IfNotPresent", m, field, ctr.ImagePullPolicy)
		}
	})
}

// splitImage splits "registry:5000/name:tag@digest" into name and tag.
func splitImage(image string) (name, tag string) {
	image, _, _ = strings.Cut(image, "@")
	slash := strings.LastIndex(image, "/")
	if colon := strings.LastIndex(image, ":"); colon > slash {
		return image[:colon], image[colon+1:]
	}
	return image, ""
}

// forEachContainer calls fn for every container and init container of every
// Deployment and Job; field names it, e.g.
// spec.template.spec.containers[beat].
func forEachContainer(c cluster, fn func(m manifest, field string, spec *corev1.PodSpec, ctr *corev1.Container)) {
	for _, m := range c.manifests {
		spec := podSpec(m)
		if spec == nil {
			continue
		}
		for i := range spec.InitContainers {
			fn(m, fmt.Sprintf("spec.template.spec.initContainers[%s]", spec.InitContainers[i].Name), spec, &spec.InitContainers[i])
		}
		for i := range spec.Containers {
			fn(m, fmt.Sprintf("spec.template.spec.containers[%s]", spec.Containers[i].Name), spec, &spec.Containers[i])
		}
	}
}

func podSpec(m manifest) *corev1.PodSpec {
	switch o := m.obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template.Spec
	case *batchv1.Job:
		return &o.Spec.Template.Spec
	}
	return nil
}

func TestK8sResources(t *testing.T) {
	c := loadCluster(t)
	forEachContainer(c, func(m manifest, field string, _ *corev1.PodSpec, ctr *corev1.Container) {
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := ctr.Resources.Requests[res]
			lim, okLim := ctr.Resources.Limits[res]
			if !okReq {
				t.Errorf("%s: %s.resources.requests.%s: missing", m, field, res)
			}
			if !okLim {
				t.Errorf("%s: %s.resources.limits.%s: missing", m, field, res)
			}
			if okReq && okLim && req.Cmp(lim) > 0 {
				t.Errorf("%s: %s.resources: requests.%s %s above limits.%s %s", m, field, res, req.String(), res, lim.String())
			}
			if okReq && req.Sign() <= 0 {
				t.Errorf("%s: %s.resources.requests.%s: %s, want > 0", m, field, res, req.String())
			}
		}
	})
}

func TestK8sSecurity(t *testing.T) {
	c := loadCluster(t)
	for _, m := range c.manifests {
		spec := podSpec(m)
		if spec == nil {
			continue
		}
		sc := spec.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s: spec.template.spec.securityContext: missing (runAsNonRoot, runAsUser)", m)
		default:
			if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
				t.Errorf("%s: spec.template.spec.securityContext.runAsNonRoot: want true", m)
			}
			if sc.RunAsUser == nil || *sc.RunAsUser == 0 {
				t.Errorf("%s: spec.template.spec.securityContext.runAsUser: want a fixed non-zero uid (the image's user is 10001)", m)
			}
		}
	}
	forEachContainer(c, func(m manifest, field string, _ *corev1.PodSpec, ctr *corev1.Container) {
		sc := ctr.SecurityContext
		if sc == nil {
			t.Errorf("%s: %s.securityContext: missing", m, field)
			return
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: %s.securityContext.allowPrivilegeEscalation: want false", m, field)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: %s.securityContext.readOnlyRootFilesystem: want true", m, field)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: %s.securityContext.privileged: want false", m, field)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: %s.securityContext.capabilities.drop: want [ALL]", m, field)
		} else if len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: %s.securityContext.capabilities.add %v: want none", m, field, sc.Capabilities.Add)
		}
	})
}

func TestK8sDeployments(t *testing.T) {
	c := loadCluster(t)
	shutdown := shutdownTimeout(t, c)
	ms, deps := objectsOf[appsv1.Deployment](c)
	if len(deps) == 0 {
		t.Fatal("no Deployment in deploy/k8s")
	}
	for i, d := range deps {
		m := ms[i]
		if d.Spec.Replicas == nil {
			t.Errorf("%s: spec.replicas: missing", m)
		}
		if d.Spec.Selector == nil {
			t.Errorf("%s: spec.selector: missing", m)
		} else if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil {
			t.Errorf("%s: spec.selector: %v", m, err)
		} else if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: spec.selector %s does not match spec.template.metadata.labels %v", m, sel, d.Spec.Template.Labels)
		}
		spec := &d.Spec.Template.Spec
		for j := range spec.Containers {
			ctr := &spec.Containers[j]
			field := fmt.Sprintf("spec.template.spec.containers[%s]", ctr.Name)
			checkProbe(t, m, field+".readinessProbe", ctr, ctr.ReadinessProbe, "/readyz")
			checkProbe(t, m, field+".livenessProbe", ctr, ctr.LivenessProbe, "/healthz")
			// The grace period covers preStop and shutdown_timeout.
			want := shutdown + preStopDelay(ctr)
			grace := time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
			if spec.TerminationGracePeriodSeconds != nil {
				grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
			}
			if grace <= want {
				t.Errorf("%s: spec.template.spec.terminationGracePeriodSeconds %v: want more than preStop + shutdown_timeout = %v",
					m, grace, want)
			}
		}
	}
}

func checkProbe(t *testing.T, m manifest, field string, ctr *corev1.Container, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil {
		t.Errorf("%s: %s: missing", m, field)
		return
	}
	if p.HTTPGet == nil {
		t.Errorf("%s: %s.httpGet: missing (want GET %s)", m, field, path)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: %s.httpGet.path %q, want %q", m, field, p.HTTPGet.Path, path)
	}
	if _, ok := containerPort(ctr, p.HTTPGet.Port); !ok {
		t.Errorf("%s: %s.httpGet.port %q: not a port of the container", m, field, p.HTTPGet.Port.String())
	}
}

// containerPort resolves a named or numbered port of ctr.
func containerPort(ctr *corev1.Container, port intstr.IntOrString) (int32, bool) {
	for _, p := range ctr.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// preStopDelay is how long a preStop hook of the form `sleep N` waits.
func preStopDelay(ctr *corev1.Container) time.Duration {
	if ctr.Lifecycle == nil || ctr.Lifecycle.PreStop == nil {
		return 0
	}
	ps := ctr.Lifecycle.PreStop
	if ps.Sleep != nil {
		return time.Duration(ps.Sleep.Seconds) * time.Second
	}
	if ps.Exec != nil && len(ps.Exec.Command) == 2 && ps.Exec.Command[0] == "sleep" {
		if n, err := strconv.Atoi(ps.Exec.Command[1]); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	return 0
}

// roleDeployment finds the one Deployment whose container runs `flotilla ROLE`.
func roleDeployment(t *testing.T, c cluster, role string) (manifest, *appsv1.Deployment, *corev1.Container) {
	t.Helper()
	ms, deps := objectsOf[appsv1.Deployment](c)
	var found []int
	for i, d := range deps {
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if len(ctr.Args) > 0 && ctr.Args[0] == role {
				found = append(found, i)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one Deployment in deploy/k8s with a container running %q (args: [%q]), found %d", role, role, len(found))
	}
	d := deps[found[0]]
	for j := range d.Spec.Template.Spec.Containers {
		if ctr := &d.Spec.Template.Spec.Containers[j]; len(ctr.Args) > 0 && ctr.Args[0] == role {
			return ms[found[0]], d, ctr
		}
	}
	panic("unreachable")
}

func TestK8sRoles(t *testing.T) {
	c := loadCluster(t)
	for _, role := range []string{"web", "api", "worker", "beat"} {
		m, _, ctr := roleDeployment(t, c, role)
		field := fmt.Sprintf("spec.template.spec.containers[%s]", ctr.Name)
		checkSecretEnv(t, m, field, ctr, "FLOTILLA_NATS_URL", "nats-url-"+role)
		checkSecretEnv(t, m, field, ctr, "FLOTILLA_REDIS_URL", "redis-url")
		// Workers too: the outbox relay.
		checkSecretEnv(t, m, field, ctr, "FLOTILLA_DATABASE_URL", "database-url")
	}
}

func TestK8sBeat(t *testing.T) {
	c := loadCluster(t)
	m, d, ctr := roleDeployment(t, c, "beat")
	field := fmt.Sprintf("spec.template.spec.containers[%s]", ctr.Name)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("%s: spec.replicas: want 2 (one leads, one stands by)", m)
	}
	if s := d.Spec.Strategy.RollingUpdate; s != nil && s.MaxUnavailable != nil && s.MaxUnavailable.String() != "0" {
		t.Errorf("%s: spec.strategy.rollingUpdate.maxUnavailable %s: want 0, so a standby stays during a rollout", m, s.MaxUnavailable.String())
	}
	var hasName bool
	for _, e := range ctr.Env {
		if e.Name == "FLOTILLA_WORKER_NAME" {
			hasName = e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
		}
	}
	if !hasName {
		t.Errorf("%s: %s.env: want FLOTILLA_WORKER_NAME from fieldRef metadata.name (the lease holder's id)", m, field)
	}
	if p, ok := containerPort(ctr, intstr.FromString("http")); !ok || p != 8083 {
		t.Errorf("%s: %s.ports: want port \"http\" 8083 (/healthz, /readyz, /metrics)", m, field)
	}

	// A PodDisruptionBudget that keeps one beat pod through voluntary
	// disruptions, and selects beat pods only.
	podLabels := labels.Set(d.Spec.Template.Labels)
	pms, pdbs := objectsOf[policyv1.PodDisruptionBudget](c)
	_, deps := objectsOf[appsv1.Deployment](c)
	var found bool
	for i, pdb := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Errorf("%s: spec.selector: %v", pms[i], err)
			continue
		}
		if pdb.Spec.Selector == nil || sel.Empty() || !sel.Matches(podLabels) {
			continue
		}
		found = true
		if mu := pdb.Spec.MinAvailable; mu == nil || mu.String() != "1" {
			t.Errorf("%s: spec.minAvailable: want 1", pms[i])
		}
		for _, other := range deps {
			if other != d && sel.Matches(labels.Set(other.Spec.Template.Labels)) {
				t.Errorf("%s: spec.selector %s also selects the pods of Deployment %q", pms[i], sel, other.Name)
			}
		}
	}
	if !found {
		t.Errorf("no PodDisruptionBudget in deploy/k8s whose spec.selector matches the beat pods' labels %v (%s)", podLabels, m)
	}
}

func checkSecretEnv(t *testing.T, m manifest, field string, ctr *corev1.Container, name, key string) {
	t.Helper()
	for _, e := range ctr.Env {
		if e.Name != name {
			continue
		}
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
			e.ValueFrom.SecretKeyRef.Name != secretName || e.ValueFrom.SecretKeyRef.Key != key {
			t.Errorf("%s: %s.env[%s]: want valueFrom.secretKeyRef {name: %s, key: %s}", m, field, name, secretName, key)
		}
		return
	}
	t.Errorf("%s: %s.env: %s missing (want it from secret %s, key %s)", m, field, name, secretName, key)
}

// job finds the one Job whose container args start with prefix.
func job(t *testing.T, c cluster, prefix ...string) (manifest, *batchv1.Job, *corev1.Container) {
	t.Helper()
	ms, jobs := objectsOf[batchv1.Job](c)
	for i, j := range jobs {
		for k := range j.Spec.Template.Spec.Containers {
			ctr := &j.Spec.Template.Spec.Containers[k]
			if len(ctr.Args) >= len(prefix) && slices.Equal(ctr.Args[:len(prefix)], prefix) {
				return ms[i], j, ctr
			}
		}
	}
	t.Fatalf("no Job in deploy/k8s runs `flotilla %s`", strings.Join(prefix, " "))
	return manifest{}, nil, nil
}

func TestK8sJobs(t *testing.T) {
	c := loadCluster(t)

	m, _, ctr := job(t, c, "migrate", "up")
	field := fmt.Sprintf("spec.template.spec.containers[%s]", ctr.Name)
	if len(ctr.Args) != 2 {
		t.Errorf("%s: %s.args %q: want [migrate up]", m, field, ctr.Args)
	}
	checkSecretEnv(t, m, field, ctr, "FLOTILLA_DATABASE_URL", "database-url")

	m, _, ctr = job(t, c, "streams", "apply")
	field = fmt.Sprintf("spec.template.spec.containers[%s]", ctr.Name)
	checkSecretEnv(t, m, field, ctr, "FLOTILLA_NATS_URL", "nats-url-admin")

	// The streams Job creates the consumer of every queue the workers consume.
	applied := flagValue(ctr.Args, "--queues")
	wm, _, wctr := roleDeployment(t, c, "worker")
	consumed := envValue(wctr, "FLOTILLA_WORKER_QUEUES")
	if q := flagValue(wctr.Args, "--queues"); q != "" {
		consumed = q
	}
	if !sameSet(applied, consumed) {
		t.Errorf("%s: args --queues %q, but %s consumes %q: every consumed queue needs its consumer; change both together",
			m, applied, wm, consumed)
	}

	ms, jobs := objectsOf[batchv1.Job](c)
	for i, j := range jobs {
		if rp := j.Spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyOnFailure && rp != corev1.RestartPolicyNever {
			t.Errorf("%s: spec.template.spec.restartPolicy %q: want OnFailure or Never", ms[i], rp)
		}
	}
}

func flagValue(args []string, flag string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func envValue(ctr *corev1.Container, name string) string {
	for _, e := range ctr.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// sameSet compares two comma-separated lists as sets; both must be non-empty.
func sameSet(a, b string) bool {
	split := func(s string) []string {
		var out []string
		for f := range strings.SplitSeq(s, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	as, bs := split(a), split(b)
	return len(as) > 0 && slices.Equal(as, bs)
}

var fromLiteral = regexp.MustCompile(`--from-literal=([A-Za-z0-9._-]+)=`)

func TestK8sSecretKeysDocumented(t *testing.T) {
	c := loadCluster(t)
	documented := map[string]bool{}
	for _, sm := range fromLiteral.FindAllStringSubmatch(c.header, -1) {
		documented[sm[1]] = true
	}
	if len(documented) == 0 {
		t.Fatalf("deploy/k8s/%s: the header comment shows no `kubectl create secret generic %s --from-literal=KEY=...`", kustomizeFile, secretName)
	}
	used := map[string]bool{}
	forEachContainer(c, func(m manifest, field string, _ *corev1.PodSpec, ctr *corev1.Container) {
		for _, e := range ctr.Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				continue
			}
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != secretName {
				t.Errorf("%s: %s.env[%s].valueFrom.secretKeyRef.name %q: the pods read one Secret, %q", m, field, e.Name, ref.Name, secretName)
			}
			used[ref.Key] = true
			if !documented[ref.Key] {
				t.Errorf("%s: %s.env[%s]: secret key %q is not in the header comment of deploy/k8s/%s (--from-literal=%s=...)",
					m, field, e.Name, ref.Key, kustomizeFile, ref.Key)
			}
		}
		for _, ef := range ctr.EnvFrom {
			if ef.SecretRef != nil {
				t.Errorf("%s: %s.envFrom: secretRef %q: name each key with env[].valueFrom.secretKeyRef so it can be checked", m, field, ef.SecretRef.Name)
			}
		}
	})
	for k := range documented {
		if !used[k] {
			t.Errorf("deploy/k8s/%s: the header comment lists secret key %q, which no container uses", kustomizeFile, k)
		}
	}
}

// TestK8sConfig checks that FLOTILLA_CONFIG points into the mounted
// ConfigMap and that the ConfigMap holds deploy/config/base.yaml.
func TestK8sConfig(t *testing.T) {
	c := loadCluster(t)
	cmms, cms := objectsOf[corev1.ConfigMap](c)
	configMaps := map[string]*corev1.ConfigMap{}
	for _, cm := range cms {
		configMaps[cm.Name] = cm
	}
	forEachContainer(c, func(m manifest, field string, spec *corev1.PodSpec, ctr *corev1.Container) {
		path := envValue(ctr, "FLOTILLA_CONFIG")
		if path == "" {
			t.Errorf("%s: %s.env: FLOTILLA_CONFIG missing", m, field)
			return
		}
		for p := range strings.SplitSeq(path, ",") {
			if !configFileMounted(spec, ctr, configMaps, p) {
				t.Errorf("%s: %s.env[FLOTILLA_CONFIG]: %q is not a key of a ConfigMap mounted in the container", m, field, p)
			}
		}
	})

	base, err := os.ReadFile(filepath.Join("config", "base.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, cm := range cms {
		if cm.Name != configMapName {
			continue
		}
		var want, got map[string]any
		if err := yaml.Unmarshal(base, &want); err != nil {
			t.Fatalf("deploy/config/base.yaml: %v", err)
		}
		if err := yaml.Unmarshal([]byte(cm.Data["base.yaml"]), &got); err != nil {
			t.Fatalf("%s: data[base.yaml]: %v", cmms[i], err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: data[base.yaml] differs from deploy/config/base.yaml (-file +ConfigMap):\n%s", cmms[i], diff)
		}
		return
	}
	t.Errorf("no ConfigMap %q in deploy/k8s", configMapName)
}

func configFileMounted(spec *corev1.PodSpec, ctr *corev1.Container, configMaps map[string]*corev1.ConfigMap, path string) bool {
	for _, vm := range ctr.VolumeMounts {
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			cm := configMaps[v.ConfigMap.Name]
			if cm == nil {
				return false
			}
			_, ok := cm.Data[rel]
			return ok
		}
	}
	return false
}

func TestK8sServices(t *testing.T) {
	c := loadCluster(t)
	sms, svcs := objectsOf[corev1.Service](c)
	_, deps := objectsOf[appsv1.Deployment](c)
	for i, svc := range svcs {
		var targets []*appsv1.Deployment
		for _, d := range deps {
			if len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
				targets = append(targets, d)
			}
		}
		if len(targets) != 1 {
			t.Errorf("%s: spec.selector %v selects the pods of %d Deployments, want 1", sms[i], svc.Spec.Selector, len(targets))
			continue
		}
		for _, p := range svc.Spec.Ports {
			var ok bool
			for j := range targets[0].Spec.Template.Spec.Containers {
				if _, found := containerPort(&targets[0].Spec.Template.Spec.Containers[j], p.TargetPort); found {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s: spec.ports[%s].targetPort %q: no such container port in Deployment %q",
					sms[i], p.Name, p.TargetPort.String(), targets[0].Name)
			}
		}
	}
}
