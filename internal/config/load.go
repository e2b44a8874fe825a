package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/json"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// roles lists every role [Load] accepts.
var roles = []string{RoleWeb, RoleAPI, RoleWorker, RoleBeat, RoleDev, RoleCLI}

// LoadOptions tells [Load] where to find the optional layers. The zero value
// reads the file named by FLOTILLA_CONFIG (if set), the process environment
// and no flags.
type LoadOptions struct {
	// File is the path of an optional configuration file: YAML (.yaml, .yml)
	// or JSON (.json), with the nested snake_case keys listed by [Keys]. A
	// comma-separated list applies its files in order, later ones winning
	// (deploy/config/base.yaml,deploy/config/api.yaml).
	// Empty means the value of FLOTILLA_CONFIG; both empty means no file.
	File string
	// Environ replaces os.Environ() when non-nil, as "NAME=value" entries.
	// FLOTILLA_CONFIG is read from it too. Tests pass an explicit (possibly
	// empty) slice to stay independent of the machine's environment.
	Environ []string
	// Flags, when non-nil, is the parsed flag set of the command. Only flags
	// that were set explicitly (pflag's Changed) and are named in FlagKeys
	// override; flag defaults never do.
	Flags *pflag.FlagSet
	// FlagKeys maps flag names to keys, e.g. "queues" → "worker.queues",
	// "nats-url" → "nats.url". Mapping to a key not in [Keys] is an error.
	FlagKeys map[string]string
}

// Load returns the effective configuration of role (web, api, worker, beat,
// dev or cli, see [RoleWeb] and the other Role constants), built
// from these layers, later wins:
//
//  1. code defaults (the defaults documented on each field of [Config]);
//  2. the role overlay: api.session_ttl=60s and api.exec_timeout=30s for the
//     api and dev roles;
//  3. the optional file ([LoadOptions.File] or FLOTILLA_CONFIG); a key not in
//     [Keys] is an error naming it, a null value leaves the key unchanged;
//  4. FLOTILLA_* environment variables, one per key as named by [EnvName];
//     lists are comma-separated; other FLOTILLA_* variables are ignored;
//  5. flags set explicitly on the command line ([LoadOptions.Flags]).
//
// Defaults that depend on env (log.format, api.auth) are derived from the
// final env unless a layer set them. Text is parsed as Go durations ("30s"),
// base-10 integers, booleans (true, false, 1, 0) and comma-separated lists;
// a value that does not parse is an error naming the key and its source,
// such as `config: worker.concurrency: invalid value "abc" from
// FLOTILLA_WORKER_CONCURRENCY: expected an integer`. Every such problem is
// reported at once, joined with [errors.Join].
//
// Load then calls [Config.Validate]. When only validation fails, Load returns
// the loaded Config together with the error so that commands such as
// `config print` and `doctor` can still show it; on any other error the
// Config is zero.
func Load(role string, opts LoadOptions) (Config, error) {
	if !slices.Contains(roles, role) {
		return Config{}, fmt.Errorf("config: unknown role %q (want one of %s)", role, strings.Join(roles, ", "))
	}
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	env := environMap(environ)

	k := koanf.New(".")
	var errs []error
	merge := func(layer string, m map[string]any) {
		if len(m) == 0 {
			return
		}
		// confmap only fails on a nil provider; keep the check for safety.
		if err := k.Load(confmap.Provider(m, "."), nil); err != nil {
			errs = append(errs, fmt.Errorf("config: merge %s: %w", layer, err))
		}
	}

	merge("defaults", defaults(role))
	merge("role overlay", overlay(role))

	path := opts.File
	if path == "" {
		path = env[EnvConfigFile]
	}
	// Several files, comma-separated, apply in order: base.yaml,api.yaml.
	for _, f := range strings.Split(path, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		m, err := fileLayer(f)
		errs = append(errs, err...)
		merge("file "+f, m)
	}

	m, err := envLayer(env)
	errs = append(errs, err...)
	merge("environment", m)

	m, err = flagLayer(opts.Flags, opts.FlagKeys)
	errs = append(errs, err...)
	merge("flags", m)

	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}

	merge("derived defaults", derived(k, role))

	var cfg Config
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return Config{}, fmt.Errorf("config: decode: %w", err)
	}
	cfg.Role = role
	// tasks.events was a boolean before it had levels (a YAML boolean
	// decodes as "1" or "0").
	switch strings.ToLower(cfg.Tasks.Events) {
	case "true", "1":
		cfg.Tasks.Events = "all"
	case "false", "0":
		cfg.Tasks.Events = "off"
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// Default returns the configuration of role built from code defaults and
// the role overlay only, as [Load] would with no file, environment or flags.
// It is meant for tests and tools that need a valid starting point. It
// panics if role is unknown.
func Default(role string) Config {
	cfg, err := Load(role, LoadOptions{Environ: []string{}})
	if err != nil {
		panic(fmt.Sprintf("config: default for role %q: %v", role, err))
	}
	return cfg
}

// defaults returns the code defaults of role as flat keys. log.format and
// api.auth are absent: they depend on the final env (see derived).
func defaults(role string) map[string]any {
	env, natsURL := "production", "nats://127.0.0.1:4222"
	if role == RoleDev {
		env, natsURL = "dev", ""
	}
	return map[string]any{
		"env":              env,
		"data_dir":         "./var",
		"shutdown_timeout": 25 * time.Second,
		"request_timeout":  5 * time.Second,
		"auth.fail_limit":  10,
		"web.session_idle": 30 * time.Minute,
		"web.session_max":  12 * time.Hour,
		"auth.fail_window": time.Minute,

		"nats.url":                   natsURL,
		"nats.embed_addr":            "127.0.0.1:4222",
		"nats.replicas":              1,
		"nats.apply_streams":         true,
		"nats.task_stream_max_msgs":  int64(1_000_000),
		"nats.task_stream_max_bytes": int64(1 << 30),
		"nats.ack_wait":              30 * time.Second,

		"database.url": "postgres://postgres@127.0.0.1:5432/flotilla?sslmode=disable",

		"redis.url":    "redis://127.0.0.1:6379/0",
		"redis.prefix": "flotilla",

		"log.level":        "info",
		"log.dir":          "",
		"log.max_size_mb":  100,
		"log.max_backups":  10,
		"log.max_age_days": 14,

		"tasks.max_body_bytes":    int64(1 << 20),
		"tasks.max_retries":       3,
		"tasks.timeout":           5 * time.Minute,
		"tasks.timeout_grace":     5 * time.Second,
		"tasks.max_retries_max":   100,
		"tasks.timeout_max":       24 * time.Hour,
		"tasks.delay_max":         30 * 24 * time.Hour,
		"tasks.expires_max":       30 * 24 * time.Hour,
		"tasks.retry_backoff":     time.Second,
		"tasks.retry_backoff_max": 10 * time.Minute,
		"tasks.result_ttl":        24 * time.Hour,
		"tasks.cancel_ttl":        720 * time.Hour,
		"tasks.index":             true,
		"tasks.limits":            []string{},
		"tasks.results":           true,
		"tasks.events":            "standard",
		"tasks.check_registered":  true,

		"web.addr": ":8080",

		"api.addr":             ":8081",
		"api.exec":             "remote",
		"api.exec_timeout_max": 5 * time.Minute,
		"api.rate_limit":       1000,
		"api.rate_window":      time.Second,

		"worker.addr":             ":8082",
		"worker.queues":           []string{"default"},
		"worker.concurrency":      64,
		"worker.prefetch":         0,
		"worker.sync":             true,
		"worker.sync_concurrency": 8,
		"worker.name":             defaultWorkerName(),

		"beat.addr":         ":8083",
		"beat.lease_ttl":    10 * time.Second,
		"beat.grace":        30 * time.Second,
		"beat.resync":       30 * time.Second,
		"beat.full_resync":  10 * time.Minute,
		"beat.publish_mode": "async",
		"beat.max_pending":  4096,

		"outbox.relay": true,
	}
}

// overlay returns the role's own settings on top of the base defaults. Dev
// runs the api role too, so it gets the api values.
func overlay(role string) map[string]any {
	switch role {
	case RoleAPI, RoleDev:
		return map[string]any{
			"api.session_ttl":  60 * time.Second,
			"api.exec_timeout": 30 * time.Second,
		}
	}
	return nil
}

// derived returns the defaults that depend on the final env, for the keys
// no layer has set.
func derived(k *koanf.Koanf, role string) map[string]any {
	dev := k.String("env") == "dev"
	m := map[string]any{}
	if !k.Exists("log.format") {
		m["log.format"] = pick(dev, "console", "json")
	}
	if !k.Exists("api.auth") {
		m["api.auth"] = pick(dev, "none", "token")
	}
	if !k.Exists("web.auth") {
		m["web.auth"] = pick(dev, "none", "required")
	}
	if !k.Exists("nats.inbox_prefix") {
		m["nats.inbox_prefix"] = DefaultInboxPrefix(role)
	}
	return m
}

// DefaultInboxPrefix is the default nats.inbox_prefix of role: _INBOX_<role>
// (the role's NATS user may subscribe to it alone), _INBOX_admin for admin
// commands, and _INBOX for dev, whose embedded server has no users.
func DefaultInboxPrefix(role string) string {
	switch role {
	case RoleDev:
		return "_INBOX"
	case RoleCLI:
		return "_INBOX_admin"
	}
	return "_INBOX_" + role
}

func pick(cond bool, yes, no string) string {
	if cond {
		return yes
	}
	return no
}

func defaultWorkerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// environMap turns "NAME=value" entries into a map; a later entry for the
// same name wins, as with exec.Cmd.Env.
func environMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if name, value, ok := strings.Cut(kv, "="); ok {
			m[name] = value
		}
	}
	return m
}

// fileLayer reads the configuration file at path and returns its values as
// typed flat keys.
func fileLayer(path string) (map[string]any, []error) {
	var parser koanf.Parser
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		parser = yaml.Parser()
	case ".json":
		parser = json.Parser()
	default:
		return nil, []error{fmt.Errorf("config: file %s: unsupported extension (want .yaml, .yml or .json)", path)}
	}
	fk := koanf.New(".")
	if err := fk.Load(file.Provider(path), parser); err != nil {
		return nil, []error{fmt.Errorf("config: read file %s: %w", path, err)}
	}

	source := "file " + path
	out := map[string]any{}
	var errs []error
	for _, key := range fk.Keys() { // sorted, so errors come in a stable order
		v := fk.Get(key)
		info, ok := keyByName[key]
		switch {
		case ok:
		case sections[key]:
			if m, isMap := v.(map[string]any); isMap && len(m) == 0 {
				continue // an empty section such as "nats: {}"
			}
			errs = append(errs, fmt.Errorf("config: %s: expected a mapping in %s", key, source))
			continue
		default:
			errs = append(errs, fmt.Errorf("config: unknown key %q in %s", key, source))
			continue
		}
		if v == nil {
			continue // null: keep the lower layer's value
		}
		tv, err := convert(info, v, source)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[key] = tv
	}
	return out, errs
}

// envLayer returns the values of the FLOTILLA_* variables that name a key.
func envLayer(env map[string]string) (map[string]any, []error) {
	names := make([]string, 0, len(env))
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(env)) {
		if _, ok := keyByEnv[name]; ok {
			names = append(names, name)
		} else if err := unknownEnv(name); err != nil {
			errs = append(errs, err)
		}
	}

	out := map[string]any{}
	for _, name := range names {
		info := keyByEnv[name]
		v, err := convert(info, env[name], name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[info.key] = v
	}
	return out, errs
}

// envNotKeys are FLOTILLA_ variables that name no key but are read by
// something: the file list, the test suites, the image's health check.
var envNotKeys = map[string]bool{EnvConfigFile: true, "FLOTILLA_HEALTH_ROLE": true}

// unknownEnv refuses a FLOTILLA_ variable that names no key (a typo would
// otherwise be ignored silently), suggesting the closest one.
func unknownEnv(name string) error {
	if !strings.HasPrefix(name, EnvPrefix) || envNotKeys[name] || strings.HasPrefix(name, EnvPrefix+"TEST_") {
		return nil
	}
	best, dist := "", -1
	for _, k := range keyTable {
		if d := editDistance(name, k.env); dist < 0 || d < dist {
			best, dist = k.env, d
		}
	}
	hint := ""
	if dist >= 0 && dist <= max(3, len(name)/4) {
		hint = fmt.Sprintf("; did you mean %s (%s)?", best, keyByEnv[best].key)
	}
	return fmt.Errorf("config: environment variable %s names no configuration key%s (unset it; `flotilla config print` lists the keys)", name, hint)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// flagLayer returns the values of the flags of fs that were set explicitly
// and are named in flagKeys.
func flagLayer(fs *pflag.FlagSet, flagKeys map[string]string) (map[string]any, []error) {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(flagKeys)) {
		if _, ok := keyByName[flagKeys[name]]; !ok {
			errs = append(errs, fmt.Errorf("config: flag --%s maps to unknown key %q", name, flagKeys[name]))
		}
	}
	if fs == nil || len(errs) > 0 {
		return nil, errs
	}

	out := map[string]any{}
	fs.Visit(func(f *pflag.Flag) { // only flags with Changed set, sorted by name
		key, ok := flagKeys[f.Name]
		if !ok {
			return
		}
		info := keyByName[key]
		var raw any = f.Value.String()
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			raw = sv.GetSlice()
		}
		v, err := convert(info, raw, "flag --"+f.Name)
		if err != nil {
			errs = append(errs, err)
			return
		}
		out[key] = v
	})
	return out, errs
}

// convert parses v, from a file, the environment or a flag, into the Go
// type of info's key: string, int64, bool, time.Duration or []string.
func convert(info *keyInfo, v any, source string) (any, error) {
	bad := func() error {
		shown, ok := v.(string)
		if !ok {
			shown = fmt.Sprint(v)
		}
		return fmt.Errorf("config: %s: invalid value %q from %s: %s", info.key, shown, source, info.kind.expected())
	}
	switch info.kind {
	case kindString:
		switch x := v.(type) {
		case string:
			return x, nil
		case int, int64, uint64, float64, bool:
			return fmt.Sprint(x), nil
		}
	case kindInt:
		var n int64
		switch x := v.(type) {
		case string:
			p, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
			if err != nil {
				return nil, bad()
			}
			n = p
		case int:
			n = int64(x)
		case int64:
			n = x
		case uint64:
			if x > math.MaxInt64 {
				return nil, bad()
			}
			n = int64(x)
		case float64: // JSON numbers
			if x != math.Trunc(x) || x < math.MinInt64 || x >= math.MaxInt64 {
				return nil, bad()
			}
			n = int64(x)
		default:
			return nil, bad()
		}
		if reflect.Zero(info.typ).OverflowInt(n) {
			return nil, bad()
		}
		return n, nil
	case kindBool:
		switch x := v.(type) {
		case bool:
			return x, nil
		case int:
			if x == 0 || x == 1 {
				return x == 1, nil
			}
		case float64:
			if x == 0 || x == 1 {
				return x == 1, nil
			}
		case string:
			switch strings.ToLower(strings.TrimSpace(x)) {
			case "true", "1":
				return true, nil
			case "false", "0":
				return false, nil
			}
		}
	case kindDuration:
		if s, ok := v.(string); ok {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err == nil {
				return d, nil
			}
		}
	case kindStrings:
		switch x := v.(type) {
		case string:
			return splitList(x), nil
		case []string:
			return trimList(x), nil
		case []any:
			list := make([]string, 0, len(x))
			for _, e := range x {
				switch e := e.(type) {
				case string:
					list = append(list, e)
				case int, int64, uint64, float64, bool:
					list = append(list, fmt.Sprint(e))
				default:
					return nil, bad()
				}
			}
			return trimList(list), nil
		}
	}
	return nil, bad()
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items; "" is the empty list.
func splitList(s string) []string {
	return trimList(strings.Split(s, ","))
}

func trimList(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
