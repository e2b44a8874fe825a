//go:build faults

package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Binaries built once per test run by TestMain.
var (
	flotillaBin string
	natsBin     string
	binDir      string
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "flotilla-faults-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	binDir = dir
	root, err := moduleRoot()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	flotillaBin = filepath.Join(dir, "flotilla")
	natsBin = filepath.Join(dir, "nats-server")
	builds := []struct{ out, pkg string }{
		{flotillaBin, "./cmd/flotilla"},
		{natsBin, "github.com/nats-io/nats-server/v2"},
	}
	// FAULTS_FLOTILLA_BIN runs the scenarios against a binary built
	// elsewhere (another revision) instead of this tree's.
	if bin := os.Getenv("FAULTS_FLOTILLA_BIN"); bin != "" {
		flotillaBin, builds = bin, builds[1:]
	}
	for _, b := range builds {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	fmt.Fprintf(os.Stderr, "faults: built flotilla and nats-server in %s\n", time.Since(start).Round(time.Millisecond))
	defer cleanupPG()
	code := m.Run()
	summaryMu.Lock()
	defer summaryMu.Unlock()
	if len(summaries) > 0 {
		// go test shows this with -v or on failure; FAULTS_SUMMARY names a
		// file that receives it too.
		text := fmt.Sprintf("faults: summary (%s since the build)\n%s\n", time.Since(start).Round(time.Second), strings.Join(summaries, "\n"))
		fmt.Fprint(os.Stderr, text)
		if path := os.Getenv("FAULTS_SUMMARY"); path != "" {
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "faults: write summary:", err)
			}
		}
	}
	return code, nil
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return filepath.Abs("../..")
	}
	return filepath.Dir(gomod), nil
}
