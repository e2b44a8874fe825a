package deploy_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// The services of docker-compose.yml by kind. A new service must be added to
// one of these lists, and so gets the checks of its kind.
var (
	composeInfra   = []string{"nats", "postgres", "redis"}    // long-running, no dependencies
	composeOneShot = []string{"migrate", "streams"}           // run once, exit 0
	composeRoles   = []string{"web", "api", "worker", "beat"} // long-running flotilla roles
)

// roleNeeds lists what each role depends on; the condition follows from the
// kind (infra: service_healthy, one-shot: service_completed_successfully).
var roleNeeds = map[string][]string{
	"web":    {"nats", "postgres", "redis", "migrate", "streams"},
	"api":    {"nats", "postgres", "redis", "migrate", "streams"},
	"beat":   {"nats", "postgres", "redis", "migrate", "streams"},
	"worker": {"nats", "redis", "streams"}, // workers use neither PostgreSQL nor its schema
}

var oneShotNeeds = map[string][]string{
	"migrate": {"postgres"},
	"streams": {"nats"},
}

// clashingHostPorts are ports a developer's own servers (NATS, PostgreSQL,
// Redis, `flotilla dev`) already use.
var clashingHostPorts = []int{4222, 8222, 5432, 6379, 8080, 8081, 8082, 8083}

// loadedCompose loads docker-compose.yml once for all tests.
var loadedCompose = sync.OnceValues(decodeCompose)

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	p, err := loadedCompose()
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

// decodeCompose loads ../docker-compose.yml with the compose-spec loader, as
// `docker compose config` would, without an engine and without building.
func decodeCompose() (*types.Project, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(root, "docker-compose.yml")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: file}},
		Environment: types.Mapping{}, // the file must not depend on the caller's environment
	}, func(o *loader.Options) {
		o.SetProjectName("flotilla", true)
		o.SkipResolveEnvironment = true
	})
}

func TestComposeServicesKnown(t *testing.T) {
	p := loadCompose(t)
	known := slices.Concat(composeInfra, composeOneShot, composeRoles)
	for name := range p.Services {
		if !slices.Contains(known, name) {
			t.Errorf("docker-compose.yml: service %q: unknown to compose_test.go; add it to composeInfra, composeOneShot or composeRoles", name)
		}
	}
	for _, name := range known {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("docker-compose.yml: service %q: missing", name)
		}
	}
}

func TestComposeLongRunning(t *testing.T) {
	p := loadCompose(t)
	for _, name := range slices.Concat(composeInfra, composeRoles) {
		s, ok := p.Services[name]
		if !ok {
			continue // reported by TestComposeServicesKnown
		}
		where := fmt.Sprintf("docker-compose.yml: services.%s", name)
		if hc := s.HealthCheck; hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
			t.Errorf("%s.healthcheck: missing or disabled", where)
		}
		if !slices.Contains([]string{"always", "unless-stopped", "on-failure"}, strings.SplitN(s.Restart, ":", 2)[0]) {
			t.Errorf("%s.restart %q: want always, unless-stopped or on-failure", where, s.Restart)
		}
		checkComposeLimits(t, where, s)
		checkComposeLogging(t, where, s)
	}
	// flotilla roles: SIGTERM gives in-flight work shutdown_timeout (25s by
	// default); the grace period must be longer.
	for _, name := range composeRoles {
		s, ok := p.Services[name]
		if !ok {
			continue
		}
		shutdown := 25 * time.Second
		if v := s.Environment["FLOTILLA_SHUTDOWN_TIMEOUT"]; v != nil {
			d, err := time.ParseDuration(*v)
			if err != nil {
				t.Errorf("docker-compose.yml: services.%s.environment.FLOTILLA_SHUTDOWN_TIMEOUT: %v", name, err)
			}
			shutdown = d
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= shutdown {
			t.Errorf("docker-compose.yml: services.%s.stop_grace_period: want more than shutdown_timeout (%v)", name, shutdown)
		}
	}
	if s, ok := p.Services["beat"]; ok && (s.Deploy == nil || s.Deploy.Replicas == nil || *s.Deploy.Replicas != 2) {
		t.Errorf("docker-compose.yml: services.beat.deploy.replicas: want 2 (one leads, one stands by)")
	}
}

func checkComposeLimits(t *testing.T, where string, s types.ServiceConfig) {
	t.Helper()
	if s.Deploy == nil || s.Deploy.Resources.Limits == nil {
		t.Errorf("%s.deploy.resources.limits: missing", where)
		return
	}
	if l := s.Deploy.Resources.Limits; l.NanoCPUs <= 0 || l.MemoryBytes <= 0 {
		t.Errorf("%s.deploy.resources.limits: want cpus and memory (have cpus %v, memory %d bytes)", where, l.NanoCPUs, l.MemoryBytes)
	}
}

func checkComposeLogging(t *testing.T, where string, s types.ServiceConfig) {
	t.Helper()
	if s.Logging == nil || s.Logging.Driver != "json-file" {
		t.Errorf("%s.logging.driver: want json-file", where)
		return
	}
	for _, opt := range []string{"max-size", "max-file"} {
		if s.Logging.Options[opt] == "" {
			t.Errorf("%s.logging.options.%s: missing (logs would grow without bound)", where, opt)
		}
	}
}

func TestComposeOneShots(t *testing.T) {
	p := loadCompose(t)
	for _, name := range composeOneShot {
		s, ok := p.Services[name]
		if !ok {
			continue
		}
		where := fmt.Sprintf("docker-compose.yml: services.%s", name)
		if s.Restart != "" && s.Restart != "no" {
			t.Errorf("%s.restart %q: a one-shot must not restart (\"no\")", where, s.Restart)
		}
		checkComposeLogging(t, where, s)
	}
	if s, ok := p.Services["migrate"]; ok && !slices.Equal(s.Command, types.ShellCommand{"migrate", "up"}) {
		t.Errorf("docker-compose.yml: services.migrate.command %q: want [migrate up]", s.Command)
	}
	st, ok1 := p.Services["streams"]
	w, ok2 := p.Services["worker"]
	if ok1 && ok2 {
		applied := flagValue(st.Command, "--queues")
		consumed := flagValue(w.Command, "--queues")
		if v := w.Environment["FLOTILLA_WORKER_QUEUES"]; consumed == "" && v != nil {
			consumed = *v
		}
		if len(st.Command) < 2 || st.Command[0] != "streams" || st.Command[1] != "apply" {
			t.Errorf("docker-compose.yml: services.streams.command %q: want [streams apply --queues ...]", st.Command)
		}
		if !sameSet(applied, consumed) {
			t.Errorf("docker-compose.yml: services.streams.command --queues %q, but services.worker consumes %q: change both together",
				applied, consumed)
		}
	}
}

func TestComposeDependencyOrder(t *testing.T) {
	p := loadCompose(t)
	condition := func(dep string) string {
		if slices.Contains(composeOneShot, dep) {
			return types.ServiceConditionCompletedSuccessfully
		}
		return types.ServiceConditionHealthy
	}
	check := func(name string, needs []string) {
		s, ok := p.Services[name]
		if !ok {
			return
		}
		for _, dep := range needs {
			d, ok := s.DependsOn[dep]
			if !ok {
				t.Errorf("docker-compose.yml: services.%s.depends_on.%s: missing (want condition %s)", name, dep, condition(dep))
				continue
			}
			if d.Condition != condition(dep) {
				t.Errorf("docker-compose.yml: services.%s.depends_on.%s.condition %q, want %s", name, dep, d.Condition, condition(dep))
			}
		}
		for dep, d := range s.DependsOn {
			switch {
			case slices.Contains(needs, dep): // checked above
			case slices.Contains(composeRoles, dep):
				t.Errorf("docker-compose.yml: services.%s.depends_on.%s: roles do not depend on each other", name, dep)
			case d.Condition != condition(dep):
				t.Errorf("docker-compose.yml: services.%s.depends_on.%s.condition %q, want %s", name, dep, d.Condition, condition(dep))
			}
		}
	}
	for _, name := range composeInfra {
		if s, ok := p.Services[name]; ok && len(s.DependsOn) > 0 {
			t.Errorf("docker-compose.yml: services.%s.depends_on: the infrastructure starts first, with no dependencies", name)
		}
	}
	for _, name := range composeOneShot {
		check(name, oneShotNeeds[name])
		if s, ok := p.Services[name]; ok {
			for dep := range s.DependsOn {
				if !slices.Contains(composeInfra, dep) {
					t.Errorf("docker-compose.yml: services.%s.depends_on.%s: a one-shot waits for infrastructure only", name, dep)
				}
			}
		}
	}
	for _, name := range composeRoles {
		check(name, roleNeeds[name])
	}
}

func TestComposePorts(t *testing.T) {
	p := loadCompose(t)
	used := map[int]string{}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			where := fmt.Sprintf("docker-compose.yml: services.%s.ports (container port %d)", name, port.Target)
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s: host_ip %q: publish on 127.0.0.1 only (\"127.0.0.1:HOST:CONTAINER\")", where, port.HostIP)
			}
			if port.Published == "" {
				t.Errorf("%s: no host port: pick a fixed one", where)
				continue
			}
			lo, hi, err := portRange(port.Published)
			if err != nil {
				t.Errorf("%s: published %q: %v", where, port.Published, err)
				continue
			}
			for hp := lo; hp <= hi; hp++ {
				if slices.Contains(clashingHostPorts, hp) {
					t.Errorf("%s: host port %d clashes with a server a developer may run locally (avoid %v)", where, hp, clashingHostPorts)
				}
				if other, ok := used[hp]; ok {
					t.Errorf("%s: host port %d also published by services.%s", where, hp, other)
				}
				used[hp] = name
			}
			if s.Deploy != nil && s.Deploy.Replicas != nil && *s.Deploy.Replicas > 1 {
				t.Errorf("%s: %d replicas cannot share host port %s", where, *s.Deploy.Replicas, port.Published)
			}
		}
	}
}

func portRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = strconv.Atoi(a); err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = strconv.Atoi(b); err != nil {
			return 0, 0, err
		}
	}
	return lo, hi, nil
}
