package logging

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/config"
)

// fileCfg is a file-mode configuration writing under dir.
func fileCfg(dir string) config.Log {
	return config.Log{Format: "json", Level: "info", Dir: dir, MaxSizeMB: 100, MaxBackups: 10, MaxAgeDays: 14}
}

// readLines decodes every JSON line of r.
func readLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "line %q", sc.Text())
		out = append(out, m)
	}
	require.NoError(t, sc.Err())
	return out
}

// requireTime checks the time field of a JSON line.
func requireTime(t *testing.T, line map[string]any) {
	t.Helper()
	ts, ok := line["time"].(string)
	require.True(t, ok, "time field missing in %v", line)
	parsed, err := time.Parse(time.RFC3339Nano, ts)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), parsed, time.Minute)
}

func TestFileName(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		role string
		want string
	}{
		{name: "web", role: config.RoleWeb, want: "web.log"},
		{name: "worker", role: config.RoleWorker, want: "worker.log"},
		{name: "beat", role: config.RoleBeat, want: "beat.log"},
		{name: "api", role: config.RoleAPI, want: "kernel_api.log"},
		{name: "dev", role: config.RoleDev, want: "dev.log"},
		{name: "cli", role: config.RoleCLI, want: "cli.log"},
		{name: "empty", role: "", want: "flotilla.log"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, FileName(tt.role))
		})
	}
}

func TestNewFileMode(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		role     string
		wantFile string
	}{
		{name: "web", role: config.RoleWeb, wantFile: "web.log"},
		{name: "worker", role: config.RoleWorker, wantFile: "worker.log"},
		{name: "beat", role: config.RoleBeat, wantFile: "beat.log"},
		{name: "api", role: config.RoleAPI, wantFile: "kernel_api.log"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "nested", "logs") // created by New
			var stdout bytes.Buffer

			l, closer, err := New(fileCfg(dir), tt.role, &stdout)
			require.NoError(t, err)
			l.Debug().Msg("hidden at info level")
			l.Info().Str(TaskID, "01J0000000000000000000000").Int(Attempt, 1).Msg("hello")
			cl := l.With().Str(Component, "test").Logger()
			cl.Warn().Msg("second")
			require.NoError(t, closer.Close())

			require.Zero(t, stdout.Len(), "file mode writes nothing to stdout")
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, entries, 1)
			require.Equal(t, tt.wantFile, entries[0].Name())

			b, err := os.ReadFile(filepath.Join(dir, tt.wantFile))
			require.NoError(t, err)
			lines := readLines(t, b)
			require.Len(t, lines, 2)
			for _, line := range lines {
				require.Equal(t, tt.role, line[Role])
				requireTime(t, line)
			}
			require.Equal(t, "hello", lines[0]["message"])
			require.Equal(t, "info", lines[0]["level"])
			require.Equal(t, "01J0000000000000000000000", lines[0][TaskID])
			require.Equal(t, "test", lines[1][Component])
		})
	}
}

func TestNewStdout(t *testing.T) {
	t.Parallel()

	t.Run("json", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		l, closer, err := New(config.Log{Format: "json", Level: "debug"}, config.RoleWorker, &buf)
		require.NoError(t, err)
		l.Debug().Str(Queue, "default").Msg("hello")
		require.NoError(t, closer.Close())

		lines := readLines(t, buf.Bytes())
		require.Len(t, lines, 1)
		require.Equal(t, config.RoleWorker, lines[0][Role])
		require.Equal(t, "default", lines[0][Queue])
		requireTime(t, lines[0])
	})

	t.Run("console", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		l, closer, err := New(config.Log{Format: "console", Level: "info"}, config.RoleAPI, &buf)
		require.NoError(t, err)
		l.Info().Str(TaskName, "email.send").Msg("hello")
		require.NoError(t, closer.Close())

		out := buf.String()
		require.False(t, json.Valid(bytes.TrimSpace(buf.Bytes())), "console output must not be JSON: %q", out)
		require.Regexp(t, regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} `), out)
		require.Contains(t, out, "hello")
		require.Contains(t, out, "role=api")
		require.Contains(t, out, "task_name=email.send")
		require.NotContains(t, out, "\x1b[", "no colors when stdout is not a terminal")
	})

	t.Run("level filters", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		l, _, err := New(config.Log{Format: "json", Level: "warn"}, config.RoleBeat, &buf)
		require.NoError(t, err)
		l.Info().Msg("hidden")
		l.Warn().Msg("shown")
		lines := readLines(t, buf.Bytes())
		require.Len(t, lines, 1)
		require.Equal(t, "shown", lines[0]["message"])
	})

	t.Run("empty level is info", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		l, _, err := New(config.Log{Format: "json"}, config.RoleBeat, &buf)
		require.NoError(t, err)
		l.Debug().Msg("hidden")
		l.Info().Msg("shown")
		require.Len(t, readLines(t, buf.Bytes()), 1)
	})
}

func TestNewErrors(t *testing.T) {
	t.Parallel()

	blocker := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(blocker, nil, 0o600))

	tests := []struct {
		name    string
		cfg     config.Log
		wantErr string
	}{
		{name: "invalid level", cfg: config.Log{Format: "json", Level: "loud"}, wantErr: `log.level: unknown level "loud"`},
		{name: "dir is a file", cfg: fileCfg(filepath.Join(blocker, "logs")), wantErr: "log.dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := New(tt.cfg, config.RoleWeb, &bytes.Buffer{})
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestNewRotates(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	cfg := fileCfg(dir)
	cfg.MaxSizeMB = 1
	cfg.MaxBackups = 3
	l, closer, err := New(cfg, config.RoleWorker, &bytes.Buffer{})
	require.NoError(t, err)

	payload := strings.Repeat("x", 1000)
	for written := 0; written < 1<<20+64<<10; written += len(payload) {
		l.Info().Str("payload", payload).Msg("fill")
	}
	require.NoError(t, closer.Close())

	// Rotation renames worker.log to worker-<timestamp>.log, then compresses
	// it in the background to worker-<timestamp>.log.gz and removes the
	// uncompressed copy last, so a lone .gz is a finished one.
	var gz string
	require.Eventually(t, func() bool {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return false
		}
		gz = ""
		for _, e := range entries {
			switch name := e.Name(); {
			case strings.HasPrefix(name, "worker-") && strings.HasSuffix(name, ".log.gz"):
				gz = name
			case strings.HasPrefix(name, "worker-") && strings.HasSuffix(name, ".log"):
				return false // still compressing
			}
		}
		return gz != ""
	}, 10*time.Second, 20*time.Millisecond, "no compressed backup in %s", dir)

	f, err := os.Open(filepath.Join(dir, gz))
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	var plain bytes.Buffer
	_, err = plain.ReadFrom(zr)
	require.NoError(t, err)
	lines := readLines(t, plain.Bytes())
	require.NotEmpty(t, lines)
	require.Equal(t, config.RoleWorker, lines[0][Role])

	info, err := os.Stat(filepath.Join(dir, "worker.log"))
	require.NoError(t, err, "the active file is recreated after rotation")
	require.Less(t, info.Size(), int64(1<<20))
}
