package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLoadSeveralFiles: base then role file, later wins, as
// FLOTILLA_CONFIG=base.yaml,api.yaml.
func TestLoadSeveralFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.yaml")
	role := filepath.Join(dir, "api.yaml")
	require.NoError(t, os.WriteFile(base, []byte("tasks:\n  max_retries: 7\napi:\n  exec_timeout: 10s\n"), 0o644))
	require.NoError(t, os.WriteFile(role, []byte("api:\n  exec_timeout: 20s\n"), 0o644))
	cfg, err := Load(RoleAPI, LoadOptions{Environ: []string{"FLOTILLA_CONFIG=" + base + "," + role}})
	require.NoError(t, err)
	require.Equal(t, 7, cfg.Tasks.MaxRetries, "from base.yaml")
	require.Equal(t, 20*time.Second, cfg.API.ExecTimeout, "api.yaml wins over base.yaml")

	_, err = Load(RoleAPI, LoadOptions{File: base + "," + filepath.Join(dir, "missing.yaml"), Environ: []string{}})
	require.ErrorContains(t, err, "missing.yaml")
}
