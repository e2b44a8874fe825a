package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/task"
)

// noEnv isolates a Load from the machine's environment.
var noEnv = []string{}

// testFlagKeys is the flag mapping a role command would pass.
var testFlagKeys = map[string]string{
	"concurrency": "worker.concurrency",
	"queues":      "worker.queues",
	"nats-url":    "nats.url",
	"log-level":   "log.level",
	"timeout":     "tasks.timeout",
}

// newFlags returns a parsed flag set like a role command's.
func newFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.Int("concurrency", 64, "")
	fs.StringSlice("queues", []string{"default"}, "")
	fs.String("nats-url", "nats://flag-default:4222", "")
	fs.String("log-level", "info", "")
	fs.String("timeout", "5m", "") // a string flag, so bad durations reach Load
	fs.Bool("unmapped", false, "")
	require.NoError(t, fs.Parse(args))
	return fs
}

// writeFile writes content to name in a fresh temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestLoadDefaultsWorker(t *testing.T) {
	t.Parallel()

	cfg, err := Load(RoleWorker, LoadOptions{Environ: noEnv})
	require.NoError(t, err)

	host, err := os.Hostname()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(cfg.Worker.Name, host+":"), "worker.name %q", cfg.Worker.Name)

	want := Config{
		Role:            RoleWorker,
		Env:             "production",
		DataDir:         "./var",
		ShutdownTimeout: 25 * time.Second,
		RequestTimeout:  5 * time.Second,
		NATS: NATS{
			URL:                "nats://127.0.0.1:4222",
			EmbedAddr:          "127.0.0.1:4222",
			Replicas:           1,
			ApplyStreams:       true,
			TaskStreamMaxMsgs:  1_000_000,
			TaskStreamMaxBytes: 1 << 30,
			AckWait:            30 * time.Second,
			InboxPrefix:        "_INBOX_worker",
		},
		Database: Database{URL: "postgres://postgres@127.0.0.1:5432/flotilla?sslmode=disable"},
		Redis:    Redis{URL: "redis://127.0.0.1:6379/0", Prefix: "flotilla"},
		Log:      Log{Format: "json", Level: "info", MaxSizeMB: 100, MaxBackups: 10, MaxAgeDays: 14},
		Tasks: Tasks{
			MaxBodyBytes:    1 << 20,
			MaxRetries:      3,
			Timeout:         5 * time.Minute,
			TimeoutGrace:    5 * time.Second,
			RetryBackoff:    time.Second,
			RetryBackoffMax: 10 * time.Minute,
			ResultTTL:       24 * time.Hour,
			CancelTTL:       720 * time.Hour,
			Index:           true,
			Limits:          []string{},
			Results:         true,
			Events:          "standard",
			CheckRegistered: true,
			MaxRetriesMax:   100,
			TimeoutMax:      24 * time.Hour,
			DelayMax:        30 * 24 * time.Hour,
			ExpiresMax:      30 * 24 * time.Hour,
		},
		Auth:   Auth{FailLimit: 10, FailWindow: time.Minute},
		Web:    Web{Addr: ":8080", Auth: "required", SessionIdle: 30 * time.Minute, SessionMax: 12 * time.Hour},
		API:    API{Addr: ":8081", Exec: "remote", ExecTimeoutMax: 5 * time.Minute, Auth: "token", RateLimit: 1000, RateWindow: time.Second},
		Worker: Worker{Addr: ":8082", Queues: []string{"default"}, Concurrency: 64, Name: cfg.Worker.Name, Sync: true, SyncConcurrency: 8},
		Beat:   Beat{Addr: ":8083", LeaseTTL: 10 * time.Second, Grace: 30 * time.Second, Resync: 30 * time.Second, FullResync: 10 * time.Minute, PublishMode: "async", MaxPending: 4096},
		Outbox: Outbox{Relay: true},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Fatalf("defaults mismatch (-want +got):\n%s", diff)
	}
}

func TestLoadDefaultsPerRole(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name        string
		role        string
		env         string
		natsURL     string
		logFormat   string
		auth        string
		sessionTTL  time.Duration
		execTimeout time.Duration
	}{
		{name: "api", role: RoleAPI, env: "production", natsURL: "nats://127.0.0.1:4222", logFormat: "json", auth: "token", sessionTTL: 60 * time.Second, execTimeout: 30 * time.Second},
		{name: "dev", role: RoleDev, env: "dev", natsURL: "", logFormat: "console", auth: "none", sessionTTL: 60 * time.Second, execTimeout: 30 * time.Second},
		{name: "worker", role: RoleWorker, env: "production", natsURL: "nats://127.0.0.1:4222", logFormat: "json", auth: "token"},
		{name: "web", role: RoleWeb, env: "production", natsURL: "nats://127.0.0.1:4222", logFormat: "json", auth: "token"},
		{name: "beat", role: RoleBeat, env: "production", natsURL: "nats://127.0.0.1:4222", logFormat: "json", auth: "token"},
		{name: "cli", role: RoleCLI, env: "production", natsURL: "nats://127.0.0.1:4222", logFormat: "json", auth: "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Load(tt.role, LoadOptions{Environ: noEnv})
			require.NoError(t, err)
			require.Equal(t, tt.role, cfg.Role)
			require.Equal(t, tt.env, cfg.Env)
			require.Equal(t, tt.natsURL, cfg.NATS.URL)
			require.Equal(t, tt.logFormat, cfg.Log.Format)
			require.Equal(t, tt.auth, cfg.API.Auth)
			require.Equal(t, tt.sessionTTL, cfg.API.SessionTTL)
			require.Equal(t, tt.execTimeout, cfg.API.ExecTimeout)
			require.Equal(t, cfg, Default(tt.role))
		})
	}
}

func TestLoadUnknownRole(t *testing.T) {
	t.Parallel()
	_, err := Load("scheduler", LoadOptions{Environ: noEnv})
	require.ErrorContains(t, err, `unknown role "scheduler"`)
	require.Panics(t, func() { Default("scheduler") })
}

func TestLoadLayers(t *testing.T) {
	t.Parallel()

	const yamlFile = `
env: production
nats:
  url: nats://file:4222
redis:
  prefix: fromfile
log:
  level: debug
  dir: ""
worker:
  concurrency: 10
  queues: [a, b]
tasks:
  timeout: 1m
  results: false
`
	const jsonFile = `{"worker": {"concurrency": 11, "queues": ["j"]}, "tasks": {"timeout": "2m", "max_body_bytes": 2048}}`

	tests := []struct {
		name  string
		role  string
		file  string // file name in a temp dir; empty = no file
		body  string
		viaEV bool // pass the file with FLOTILLA_CONFIG instead of opts.File
		env   []string
		args  []string
		check func(t *testing.T, cfg Config)
	}{
		{
			name: "file over defaults",
			role: RoleWorker, file: "c.yaml", body: yamlFile,
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, 10, cfg.Worker.Concurrency)
				require.Equal(t, []string{"a", "b"}, cfg.Worker.Queues)
				require.Equal(t, "nats://file:4222", cfg.NATS.URL)
				require.Equal(t, "fromfile", cfg.Redis.Prefix)
				require.Equal(t, "debug", cfg.Log.Level)
				require.Equal(t, time.Minute, cfg.Tasks.Timeout)
				require.False(t, cfg.Tasks.Results)
				require.Equal(t, "standard", cfg.Tasks.Events, "keys absent from the file keep their default")
			},
		},
		{
			name: "file from FLOTILLA_CONFIG",
			role: RoleWorker, file: "c.yml", body: yamlFile, viaEV: true,
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, 10, cfg.Worker.Concurrency)
			},
		},
		{
			name: "json file",
			role: RoleWorker, file: "c.json", body: jsonFile,
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, 11, cfg.Worker.Concurrency)
				require.Equal(t, []string{"j"}, cfg.Worker.Queues)
				require.Equal(t, 2*time.Minute, cfg.Tasks.Timeout)
				require.Equal(t, int64(2048), cfg.Tasks.MaxBodyBytes)
			},
		},
		{
			name: "env over file",
			role: RoleWorker, file: "c.yaml", body: yamlFile,
			env: []string{
				"FLOTILLA_WORKER_CONCURRENCY=20",
				"FLOTILLA_WORKER_QUEUES= c , d,",
				"FLOTILLA_LOG_LEVEL=warn",
				"FLOTILLA_TASKS_RESULTS=1",
				"FLOTILLA_TASKS_TIMEOUT=90s",
				"FLOTILLA_NATS_EMBED_ADDR=127.0.0.1:5222",
				"FLOTILLA_DATA_DIR=/srv/flotilla",
				"FLOTILLA_DATABASE_URL=postgres://app@db:5432/app",
				"FLOTILLA_LOG_DIR=/var/log/flotilla",
				"FLOTILLA_WEB_ADDR=127.0.0.1:9000",
			},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, 20, cfg.Worker.Concurrency)
				require.Equal(t, []string{"c", "d"}, cfg.Worker.Queues)
				require.Equal(t, "warn", cfg.Log.Level)
				require.True(t, cfg.Tasks.Results)
				require.Equal(t, 90*time.Second, cfg.Tasks.Timeout)
				require.Equal(t, "127.0.0.1:5222", cfg.NATS.EmbedAddr)
				require.Equal(t, "/srv/flotilla", cfg.DataDir)
				require.Equal(t, "postgres://app@db:5432/app", cfg.Database.URL)
				require.Equal(t, "/var/log/flotilla", cfg.Log.Dir)
				require.Equal(t, "127.0.0.1:9000", cfg.Web.Addr)
				require.Equal(t, "nats://file:4222", cfg.NATS.URL, "file value kept where env is silent")
			},
		},
		{
			name: "flags over env",
			role: RoleWorker, file: "c.yaml", body: yamlFile,
			env:  []string{"FLOTILLA_WORKER_CONCURRENCY=20", "FLOTILLA_WORKER_QUEUES=c,d", "FLOTILLA_LOG_LEVEL=warn"},
			args: []string{"--concurrency=30", "--queues=x,y", "--queues=z", "--unmapped"},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, 30, cfg.Worker.Concurrency)
				require.Equal(t, []string{"x", "y", "z"}, cfg.Worker.Queues)
				require.Equal(t, "warn", cfg.Log.Level, "unset flag does not override env")
				require.Equal(t, "nats://file:4222", cfg.NATS.URL, "flag default does not override the file")
			},
		},
		{
			name: "env wins over role overlay",
			role: RoleAPI,
			env:  []string{"FLOTILLA_API_SESSION_TTL=2m", "FLOTILLA_API_EXEC_TIMEOUT=10s"},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, 2*time.Minute, cfg.API.SessionTTL)
				require.Equal(t, 10*time.Second, cfg.API.ExecTimeout)
			},
		},
		{
			name: "api rate limit from env",
			role: RoleAPI,
			env:  []string{"FLOTILLA_API_RATE_LIMIT=0", "FLOTILLA_API_RATE_WINDOW=1m"},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, 0, cfg.API.RateLimit)
				require.Equal(t, time.Minute, cfg.API.RateWindow)
			},
		},
		{
			name: "env-derived defaults follow the final env",
			role: RoleWorker,
			env:  []string{"FLOTILLA_ENV=dev"},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, "console", cfg.Log.Format)
				require.Equal(t, "none", cfg.API.Auth)
				require.Equal(t, "nats://127.0.0.1:4222", cfg.NATS.URL, "nats.url follows the role, not env")
			},
		},
		{
			name: "explicit values beat env-derived defaults",
			role: RoleDev,
			env:  []string{"FLOTILLA_LOG_FORMAT=json", "FLOTILLA_API_AUTH=token"},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, "dev", cfg.Env)
				require.Equal(t, "json", cfg.Log.Format)
				require.Equal(t, "token", cfg.API.Auth)
			},
		},
		{
			name: "dev in production env",
			role: RoleDev,
			env:  []string{"FLOTILLA_ENV=production"},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, "json", cfg.Log.Format)
				require.Equal(t, "token", cfg.API.Auth)
				require.Empty(t, cfg.NATS.URL)
			},
		},
		{
			name: "test and non-key FLOTILLA_ variables are left alone",
			role: RoleWorker,
			env: []string{
				"FLOTILLA_TEST_DATABASE_URL=not a url",
				"FLOTILLA_HEALTH_ROLE=web",
				"FLOTILLA_CONFIG=",
				"HOME=/root",
				"FLOTILLA_WORKER_CONCURRENCY=5",
				"FLOTILLA_WORKER_CONCURRENCY=6", // the later entry wins
			},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, []string{"default"}, cfg.Worker.Queues)
				require.Equal(t, 6, cfg.Worker.Concurrency)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := LoadOptions{Environ: slices.Clone(tt.env), FlagKeys: testFlagKeys}
			if opts.Environ == nil {
				opts.Environ = noEnv
			}
			if tt.file != "" {
				path := writeFile(t, tt.file, tt.body)
				if tt.viaEV {
					opts.Environ = append(opts.Environ, EnvConfigFile+"="+path)
				} else {
					opts.File = path
				}
			}
			if tt.args != nil {
				opts.Flags = newFlags(t, tt.args...)
			}
			cfg, err := Load(tt.role, opts)
			require.NoError(t, err)
			tt.check(t, cfg)
		})
	}
}

func TestLoadBadValues(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		file     string
		body     string
		env      []string
		args     []string
		flagKeys map[string]string
		wantErr  []string
	}{
		{
			name:    "env misspelt",
			env:     []string{"FLOTILLA_WORKER_QUEUE=action", "FLOTILLA_WORKER_CONCURENCY=5"},
			wantErr: []string{"config: environment variable FLOTILLA_WORKER_CONCURENCY names no configuration key; did you mean FLOTILLA_WORKER_CONCURRENCY (worker.concurrency)?", "config: environment variable FLOTILLA_WORKER_QUEUE names no configuration key; did you mean FLOTILLA_WORKER_QUEUES (worker.queues)?"},
		},
		{
			name:    "env unknown, nothing close",
			env:     []string{"FLOTILLA_SOMETHING_ELSE_ENTIRELY=1"},
			wantErr: []string{"config: environment variable FLOTILLA_SOMETHING_ELSE_ENTIRELY names no configuration key (unset it"},
		},
		{
			name:    "env integer",
			env:     []string{"FLOTILLA_WORKER_CONCURRENCY=abc"},
			wantErr: []string{`config: worker.concurrency: invalid value "abc" from FLOTILLA_WORKER_CONCURRENCY: expected an integer`},
		},
		{
			name:    "env empty integer",
			env:     []string{"FLOTILLA_NATS_REPLICAS="},
			wantErr: []string{`config: nats.replicas: invalid value "" from FLOTILLA_NATS_REPLICAS: expected an integer`},
		},
		{
			name:    "env boolean",
			env:     []string{"FLOTILLA_TASKS_RESULTS=yes"},
			wantErr: []string{`config: tasks.results: invalid value "yes" from FLOTILLA_TASKS_RESULTS: expected a boolean`},
		},
		{
			name:    "env duration without unit",
			env:     []string{"FLOTILLA_NATS_ACK_WAIT=30"},
			wantErr: []string{`config: nats.ack_wait: invalid value "30" from FLOTILLA_NATS_ACK_WAIT: expected a duration`},
		},
		{
			name:    "env integer overflow",
			env:     []string{"FLOTILLA_TASKS_MAX_BODY_BYTES=99999999999999999999"},
			wantErr: []string{`config: tasks.max_body_bytes: invalid value "99999999999999999999" from FLOTILLA_TASKS_MAX_BODY_BYTES`},
		},
		{
			name: "every bad env value is reported",
			env:  []string{"FLOTILLA_WORKER_CONCURRENCY=many", "FLOTILLA_SHUTDOWN_TIMEOUT=soon"},
			wantErr: []string{
				`config: worker.concurrency: invalid value "many" from FLOTILLA_WORKER_CONCURRENCY`,
				`config: shutdown_timeout: invalid value "soon" from FLOTILLA_SHUTDOWN_TIMEOUT`,
			},
		},
		{
			name:    "flag",
			args:    []string{"--timeout=forever"},
			wantErr: []string{`config: tasks.timeout: invalid value "forever" from flag --timeout: expected a duration`},
		},
		{
			name:     "flag mapped to unknown key",
			flagKeys: map[string]string{"queues": "worker.queue"},
			wantErr:  []string{`config: flag --queues maps to unknown key "worker.queue"`},
		},
		{
			name:    "file value",
			file:    "c.yaml",
			body:    "worker:\n  concurrency: lots\n",
			wantErr: []string{`config: worker.concurrency: invalid value "lots" from file `, "c.yaml: expected an integer"},
		},
		{
			name:    "file duration as number",
			file:    "c.json",
			body:    `{"tasks": {"timeout": 30}}`,
			wantErr: []string{`config: tasks.timeout: invalid value "30" from file `},
		},
		{
			name:    "file list of maps",
			file:    "c.yaml",
			body:    "worker:\n  queues:\n    - name: a\n",
			wantErr: []string{`config: worker.queues: invalid value`},
		},
		{
			name:    "unknown file key",
			file:    "c.yaml",
			body:    "worker:\n  queue: [a]\n",
			wantErr: []string{`config: unknown key "worker.queue" in file `},
		},
		{
			name:    "unknown top-level file key",
			file:    "c.yaml",
			body:    "postgres:\n  url: postgres://x\n",
			wantErr: []string{`config: unknown key "postgres.url" in file `},
		},
		{
			name:    "section given a scalar",
			file:    "c.yaml",
			body:    "nats: nats://x:4222\n",
			wantErr: []string{`config: nats: expected a mapping in file `},
		},
		{
			name:    "unsupported extension",
			file:    "c.toml",
			body:    "env = 'dev'\n",
			wantErr: []string{"unsupported extension"},
		},
		{
			name:    "malformed yaml",
			file:    "c.yaml",
			body:    "worker: [\n",
			wantErr: []string{"config: read file "},
		},
		{
			name:    "missing file",
			env:     []string{"FLOTILLA_CONFIG=/nonexistent/flotilla.yaml"},
			wantErr: []string{"config: read file /nonexistent/flotilla.yaml"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := LoadOptions{Environ: tt.env, FlagKeys: tt.flagKeys}
			if opts.Environ == nil {
				opts.Environ = noEnv
			}
			if opts.FlagKeys == nil {
				opts.FlagKeys = testFlagKeys
			}
			if tt.file != "" {
				opts.File = writeFile(t, tt.file, tt.body)
			}
			opts.Flags = newFlags(t, tt.args...)
			cfg, err := Load(RoleWorker, opts)
			require.Error(t, err)
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
			require.Equal(t, Config{}, cfg)
		})
	}
}

func TestLoadRunsValidate(t *testing.T) {
	t.Parallel()
	cfg, err := Load(RoleWorker, LoadOptions{Environ: []string{"FLOTILLA_NATS_REPLICAS=2", "FLOTILLA_WORKER_QUEUES="}})
	require.ErrorContains(t, err, "config: nats.replicas: must be 1 or 3, got 2")
	require.ErrorContains(t, err, "config: worker.queues: must list at least one queue")
	require.Equal(t, 2, cfg.NATS.Replicas, "the loaded config comes back with a validation error")
}

func TestValidate(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		role    string // default RoleAPI
		mutate  func(c *Config)
		wantErr string // empty = valid
	}{
		{name: "defaults are valid", mutate: func(*Config) {}},
		{name: "tasks.events", mutate: func(c *Config) { c.Tasks.Events = "some" }, wantErr: `config: tasks.events: must be "off", "outcomes", "standard" or "all", got "some"`},
		{name: "env", mutate: func(c *Config) { c.Env = "staging" }, wantErr: `config: env: must be "dev" or "production", got "staging"`},
		{name: "data_dir for dev", role: RoleDev, mutate: func(c *Config) { c.DataDir = "" }, wantErr: "config: data_dir:"},
		{name: "shutdown_timeout zero", mutate: func(c *Config) { c.ShutdownTimeout = 0 }, wantErr: "config: shutdown_timeout: must be a positive duration"},
		{name: "nats.url empty outside dev", mutate: func(c *Config) { c.NATS.URL = "" }, wantErr: "config: nats.url: must not be empty"},
		{name: "nats.url empty in dev", role: RoleDev, mutate: func(c *Config) { c.NATS.URL = "" }},
		{name: "nats.url scheme", mutate: func(c *Config) { c.NATS.URL = "http://h:4222" }, wantErr: `config: nats.url: scheme must be "nats", "tls", "ws" or "wss", got "http"`},
		{name: "nats.url list", mutate: func(c *Config) { c.NATS.URL = "nats://a:4222, tls://b:4222,wss://c" }},
		{name: "nats.url list bad item", mutate: func(c *Config) { c.NATS.URL = "nats://a:4222,redis://b" }, wantErr: "config: nats.url[1]: scheme must be"},
		{name: "nats.url no host", mutate: func(c *Config) { c.NATS.URL = "nats://" }, wantErr: "config: nats.url: must name a host"},
		{name: "nats.embed_addr", mutate: func(c *Config) { c.NATS.EmbedAddr = "localhost" }, wantErr: `config: nats.embed_addr: "localhost" is not a host:port address`},
		{name: "nats.replicas", mutate: func(c *Config) { c.NATS.Replicas = 2 }, wantErr: "config: nats.replicas: must be 1 or 3, got 2"},
		{name: "nats.replicas 3", mutate: func(c *Config) { c.NATS.Replicas = 3 }},
		{name: "nats.task_stream_max_msgs", mutate: func(c *Config) { c.NATS.TaskStreamMaxMsgs = 0 }, wantErr: "config: nats.task_stream_max_msgs:"},
		{name: "nats.task_stream_max_bytes unlimited", mutate: func(c *Config) { c.NATS.TaskStreamMaxBytes = -1 }},
		{name: "nats.ack_wait", mutate: func(c *Config) { c.NATS.AckWait = 0 }, wantErr: "config: nats.ack_wait: must be a positive duration"},
		{name: "database.url scheme", mutate: func(c *Config) { c.Database.URL = "mysql://u@h/db" }, wantErr: `config: database.url: scheme must be "postgres" or "postgresql", got "mysql"`},
		{name: "database.url postgresql", mutate: func(c *Config) { c.Database.URL = "postgresql://u@h/db" }},
		{name: "database.url empty", mutate: func(c *Config) { c.Database.URL = "" }, wantErr: "config: database.url: must not be empty"},
		{name: "database.url unparsable", mutate: func(c *Config) { c.Database.URL = "postgres://u:pw@h:port/db" }, wantErr: "config: database.url: not a valid URL"},
		{name: "redis.url scheme", mutate: func(c *Config) { c.Redis.URL = "http://h:6379" }, wantErr: `config: redis.url: scheme must be "redis" or "rediss"`},
		{name: "redis.url rediss", mutate: func(c *Config) { c.Redis.URL = "rediss://h:6380/1" }},
		{name: "log.format", mutate: func(c *Config) { c.Log.Format = "text" }, wantErr: `config: log.format: must be "console" or "json", got "text"`},
		{name: "log.level", mutate: func(c *Config) { c.Log.Level = "verbose" }, wantErr: `config: log.level: unknown level "verbose"`},
		{name: "log.level empty", mutate: func(c *Config) { c.Log.Level = "" }, wantErr: "config: log.level: must not be empty"},
		{name: "log.level debug", mutate: func(c *Config) { c.Log.Level = "debug" }},
		{name: "log.max_size_mb", mutate: func(c *Config) { c.Log.MaxSizeMB = 0 }, wantErr: "config: log.max_size_mb: must be positive"},
		{name: "log.max_backups", mutate: func(c *Config) { c.Log.MaxBackups = -1 }, wantErr: "config: log.max_backups: must not be negative"},
		{name: "log.max_age_days", mutate: func(c *Config) { c.Log.MaxAgeDays = -1 }, wantErr: "config: log.max_age_days: must not be negative"},
		{name: "tasks.max_body_bytes", mutate: func(c *Config) { c.Tasks.MaxBodyBytes = 0 }, wantErr: "config: tasks.max_body_bytes: must be positive"},
		{name: "tasks.max_retries", mutate: func(c *Config) { c.Tasks.MaxRetries = -1 }, wantErr: "config: tasks.max_retries: must not be negative"},
		{name: "tasks.max_retries zero", mutate: func(c *Config) { c.Tasks.MaxRetries = 0 }},
		{name: "tasks.timeout", mutate: func(c *Config) { c.Tasks.Timeout = 0 }, wantErr: "config: tasks.timeout: must be a positive duration"},
		{name: "tasks.retry_backoff", mutate: func(c *Config) { c.Tasks.RetryBackoff = -time.Second }, wantErr: "config: tasks.retry_backoff: must be a positive duration"},
		{name: "tasks.retry_backoff_max below base", mutate: func(c *Config) { c.Tasks.RetryBackoffMax = time.Millisecond }, wantErr: "config: tasks.retry_backoff_max: must not be less than tasks.retry_backoff"},
		{name: "tasks.result_ttl", mutate: func(c *Config) { c.Tasks.ResultTTL = 0 }, wantErr: "config: tasks.result_ttl: must be a positive duration"},
		{name: "web.addr empty", mutate: func(c *Config) { c.Web.Addr = "" }, wantErr: "config: web.addr: must not be empty"},
		{name: "web.addr port", mutate: func(c *Config) { c.Web.Addr = ":http" }, wantErr: `config: web.addr: ":http" has an invalid port`},
		{name: "api.addr", mutate: func(c *Config) { c.API.Addr = "8081" }, wantErr: "config: api.addr:"},
		{name: "api.exec", mutate: func(c *Config) { c.API.Exec = "eager" }, wantErr: `config: api.exec: must be "remote" or "local", got "eager"`},
		{name: "api.exec local", mutate: func(c *Config) { c.API.Exec = "local" }},
		{name: "api.auth", mutate: func(c *Config) { c.API.Auth = "basic" }, wantErr: `config: api.auth: must be "none" or "token", got "basic"`},
		{name: "api.exec_timeout", mutate: func(c *Config) { c.API.ExecTimeout = 0 }, wantErr: "config: api.exec_timeout: must be a positive duration"},
		{name: "api.exec_timeout zero outside api", role: RoleWorker, mutate: func(c *Config) { c.API.ExecTimeout = 0 }},
		{name: "api.exec_timeout above max", mutate: func(c *Config) { c.API.ExecTimeout = time.Hour }, wantErr: "config: api.exec_timeout: must not exceed api.exec_timeout_max"},
		{name: "api.session_ttl", mutate: func(c *Config) { c.API.SessionTTL = 0 }, wantErr: "config: api.session_ttl: must be a positive duration"},
		{name: "api.rate_limit", mutate: func(c *Config) { c.API.RateLimit = -1 }, wantErr: "config: api.rate_limit: must not be negative, got -1"},
		{name: "api.rate_limit off", mutate: func(c *Config) { c.API.RateLimit = 0 }},
		{name: "api.rate_window", mutate: func(c *Config) { c.API.RateWindow = 0 }, wantErr: "config: api.rate_window: must be a positive duration"},
		{name: "api.rate_window sub-millisecond", mutate: func(c *Config) { c.API.RateWindow = 1500 * time.Microsecond }, wantErr: "config: api.rate_window: must be a whole number of milliseconds"},
		{name: "api.rate_window minute", mutate: func(c *Config) { c.API.RateWindow = time.Minute }},
		{name: "worker.addr", mutate: func(c *Config) { c.Worker.Addr = "host:" }, wantErr: "config: worker.addr:"},
		{name: "worker.queues empty", mutate: func(c *Config) { c.Worker.Queues = nil }, wantErr: "config: worker.queues: must list at least one queue"},
		{name: "worker.queues name", mutate: func(c *Config) { c.Worker.Queues = []string{"ok", "Not.OK"} }, wantErr: `config: worker.queues: queue "Not.OK" must match`},
		{name: "worker.queues duplicate", mutate: func(c *Config) { c.Worker.Queues = []string{"a", "b", "a"} }, wantErr: `config: worker.queues: queue "a" is listed twice`},
		{name: "worker.queues valid", mutate: func(c *Config) { c.Worker.Queues = []string{"default", "high_prio", "mail-1"} }},
		{name: "worker.concurrency zero", mutate: func(c *Config) { c.Worker.Concurrency = 0 }, wantErr: "config: worker.concurrency: must be between 1 and 10000, got 0"},
		{name: "worker.concurrency high", mutate: func(c *Config) { c.Worker.Concurrency = 10001 }, wantErr: "config: worker.concurrency: must be between 1 and 10000, got 10001"},
		{name: "worker.concurrency max", mutate: func(c *Config) { c.Worker.Concurrency = 10000 }},
		{name: "worker.name", mutate: func(c *Config) { c.Worker.Name = "" }, wantErr: "config: worker.name: must not be empty"},
		{name: "beat.addr", mutate: func(c *Config) { c.Beat.Addr = "[::1" }, wantErr: "config: beat.addr:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			role := tt.role
			if role == "" {
				role = RoleAPI
			}
			cfg := Default(role)
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := Default(RoleWorker)
	cfg.Env = "qa"
	cfg.NATS.Replicas = 5
	cfg.Worker.Concurrency = 0
	err := cfg.Validate()
	var joined interface{ Unwrap() []error }
	require.ErrorAs(t, err, &joined)
	require.Len(t, joined.Unwrap(), 3)
}

func TestValidateHidesPasswords(t *testing.T) {
	t.Parallel()
	cfg := Default(RoleWorker)
	cfg.Database.URL = "mysql://app:s3cret@db/app"
	cfg.Redis.URL = "redis://:s3cret@cache:port/0"
	cfg.NATS.URL = "nats://a:s3cret@n1:4222,http://b:s3cret@n2"
	err := cfg.Validate()
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret")
}

func TestRedacted(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		set  func(c *Config)
		get  func(c Config) string
		want string
	}{
		{
			name: "database.url",
			set:  func(c *Config) { c.Database.URL = "postgres://app:s3cret@db.internal:5432/flotilla?sslmode=require" },
			get:  func(c Config) string { return c.Database.URL },
			want: "postgres://app:xxxxx@db.internal:5432/flotilla?sslmode=require",
		},
		{
			name: "redis.url without user",
			set:  func(c *Config) { c.Redis.URL = "rediss://:s3cret@cache:6380/2" },
			get:  func(c Config) string { return c.Redis.URL },
			want: "rediss://:xxxxx@cache:6380/2",
		},
		{
			name: "nats.url list",
			set:  func(c *Config) { c.NATS.URL = "nats://u1:s3cret@n1:4222,nats://n2:4222,tls://u3:s3cret@n3:4222" },
			get:  func(c Config) string { return c.NATS.URL },
			want: "nats://u1:xxxxx@n1:4222,nats://n2:4222,tls://u3:xxxxx@n3:4222",
		},
		{
			name: "unparsable url",
			set:  func(c *Config) { c.Database.URL = "postgres://app:s3c ret@db:5432/x" },
			get:  func(c Config) string { return c.Database.URL },
			want: "postgres://app:xxxxx@db:5432/x",
		},
		{
			name: "unparsable url with hash in password",
			set:  func(c *Config) { c.Redis.URL = "redis://app:s3c#r/t@cache:6379/0" },
			get:  func(c Config) string { return c.Redis.URL },
			want: "redis://app:xxxxx@cache:6379/0",
		},
		{
			name: "no password",
			set:  func(c *Config) { c.Database.URL = "postgres://app@db:5432/x?sslmode=disable" },
			get:  func(c Config) string { return c.Database.URL },
			want: "postgres://app@db:5432/x?sslmode=disable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Default(RoleWorker)
			tt.set(&cfg)
			orig := tt.get(cfg)
			r := cfg.Redacted()
			require.Equal(t, tt.want, tt.get(r))
			require.NotContains(t, tt.get(r), "s3c")
			require.Equal(t, orig, tt.get(cfg), "Redacted must not modify its receiver")
		})
	}
}

func TestRedactedCopiesQueues(t *testing.T) {
	t.Parallel()
	cfg := Default(RoleWorker)
	r := cfg.Redacted()
	r.Worker.Queues[0] = "changed"
	require.Equal(t, []string{"default"}, cfg.Worker.Queues)
}

func TestPrint(t *testing.T) {
	t.Parallel()

	cfg := Default(RoleAPI)
	cfg.Database.URL = "postgres://app:s3cret@db:5432/flotilla"
	cfg.Redis.URL = "redis://default:s3cret@cache:6379/0"
	cfg.NATS.URL = "nats://a:s3cret@n1:4222,nats://b:s3cret@n2:4222"

	tests := []struct {
		name   string
		format string
		want   []string
	}{
		{
			name:   "yaml",
			format: "yaml",
			want:   []string{"session_ttl: 1m0s", "exec_timeout: 30s", "postgres://app:xxxxx@db:5432/flotilla", "max_body_bytes: 1048576", "- default"},
		},
		{
			name:   "json",
			format: "json",
			want:   []string{`"session_ttl": "1m0s"`, `"url": "redis://default:xxxxx@cache:6379/0"`, `"queues": [`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			require.NoError(t, cfg.Print(&buf, tt.format))
			out := buf.String()
			require.NotContains(t, out, "s3cret")
			require.NotContains(t, out, "role")
			for _, w := range tt.want {
				require.Contains(t, out, w)
			}
		})
	}

	t.Run("json is nested", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		require.NoError(t, cfg.Print(&buf, "json"))
		var m map[string]any
		require.NoError(t, json.Unmarshal(buf.Bytes(), &m))
		require.Equal(t, "25s", m["shutdown_timeout"])
		require.Equal(t, "30s", m["nats"].(map[string]any)["ack_wait"])
		require.Equal(t, []any{"default"}, m["worker"].(map[string]any)["queues"])
	})

	t.Run("unknown format", func(t *testing.T) {
		t.Parallel()
		require.ErrorContains(t, cfg.Print(&bytes.Buffer{}, "toml"), `unknown format "toml"`)
	})
}

func TestPrintRoundTrip(t *testing.T) {
	t.Parallel()

	for _, format := range []string{"yaml", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			want := Default(RoleAPI)
			want.Worker.Queues = []string{"a", "b"}
			want.Tasks.Timeout = 90 * time.Second
			want.Log.Dir = "/var/log/flotilla"

			var buf bytes.Buffer
			require.NoError(t, want.Print(&buf, format))
			path := writeFile(t, "printed."+format, buf.String())

			got, err := Load(RoleAPI, LoadOptions{File: path, Environ: noEnv})
			require.NoError(t, err)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()

	keys := Keys()
	require.True(t, slices.IsSorted(keys))
	for _, k := range []string{
		"env", "data_dir", "shutdown_timeout", "nats.url", "nats.embed_addr", "database.url",
		"redis.url", "log.dir", "log.format", "web.addr", "api.session_ttl", "worker.queues",
		"worker.concurrency", "beat.addr", "tasks.check_registered",
	} {
		require.Contains(t, keys, k)
	}
	require.NotContains(t, keys, "role")
	require.NotContains(t, keys, "nats", "sections are not keys")

	// Every key has a distinct environment variable.
	seen := map[string]string{}
	for _, k := range keys {
		env := EnvName(k)
		require.NotContains(t, seen, env, "keys %s and %s", seen[env], k)
		seen[env] = k
	}
}

func TestEnvName(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		key  string
		want string
	}{
		{name: "nested", key: "nats.embed_addr", want: "FLOTILLA_NATS_EMBED_ADDR"},
		{name: "top level", key: "data_dir", want: "FLOTILLA_DATA_DIR"},
		{name: "database", key: "database.url", want: "FLOTILLA_DATABASE_URL"},
		{name: "log", key: "log.dir", want: "FLOTILLA_LOG_DIR"},
		{name: "web", key: "web.addr", want: "FLOTILLA_WEB_ADDR"},
		{name: "list", key: "worker.queues", want: "FLOTILLA_WORKER_QUEUES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, EnvName(tt.key))
		})
	}
}

func TestErrorsAreJoined(t *testing.T) {
	t.Parallel()
	_, err := Load(RoleWorker, LoadOptions{Environ: []string{"FLOTILLA_WORKER_CONCURRENCY=x", "FLOTILLA_NATS_REPLICAS=y"}})
	var joined interface{ Unwrap() []error }
	require.True(t, errors.As(err, &joined))
	require.Len(t, joined.Unwrap(), 2)
}

// TestEventLevels: tasks.events takes a level, and the booleans it took
// before levels (from the environment, or a YAML file) still work.
func TestEventLevels(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ env, file, want string }{
		{want: "standard"},
		{env: "outcomes", want: "outcomes"},
		{env: "true", want: "all"},
		{env: "false", want: "off"},
		{file: "tasks:\n  events: true\n", want: "all"},
		{file: "tasks:\n  events: false\n", want: "off"},
		{file: "tasks:\n  events: all\n", want: "all"},
	} {
		opts := LoadOptions{Environ: []string{}}
		if tt.env != "" {
			opts.Environ = []string{"FLOTILLA_TASKS_EVENTS=" + tt.env}
		}
		if tt.file != "" {
			path := filepath.Join(t.TempDir(), "c.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tt.file), 0o600))
			opts.File = path
		}
		cfg, err := Load(RoleWorker, opts)
		require.NoError(t, err, "%+v", tt)
		require.Equal(t, tt.want, cfg.Tasks.Events, "%+v", tt)
	}
}

func TestTaskLimits(t *testing.T) {
	t.Parallel()
	l, err := ParseTaskLimit("report.build rate=10/s concurrency=5")
	require.NoError(t, err)
	require.Equal(t, TaskLimit{Task: "report.build", Rate: task.Rate{N: 10, Per: time.Second}, Concurrency: 5}, l)
	l, err = ParseTaskLimit(" mail.send   rate=3/30s ")
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, l.Rate.Interval())
	for in, want := range map[string]string{
		"report.build":         "want \"TASK rate=N/s",
		"Bad rate=1/s":         "invalid",
		"a.b rate=x":           "want N/s",
		"a.b rate=0/s":         "N ≥ 1",
		"a.b rate=5/fortnight": "not s, m, h",
		"a.b concurrency=0":    "not a number ≥ 1",
		"a.b speed=1":          `unknown setting "speed"`,
	} {
		_, err := ParseTaskLimit(in)
		require.ErrorContains(t, err, want, in)
	}
	cfg, err := Load(RoleWorker, LoadOptions{Environ: []string{"FLOTILLA_TASKS_LIMITS=a.b rate=10/s, c.d concurrency=2"}})
	require.NoError(t, err)
	require.Equal(t, []string{"a.b rate=10/s", "c.d concurrency=2"}, cfg.Tasks.Limits)
	_, err = Load(RoleWorker, LoadOptions{Environ: []string{"FLOTILLA_TASKS_LIMITS=a.b rate=often"}})
	require.ErrorContains(t, err, "tasks.limits")
}
