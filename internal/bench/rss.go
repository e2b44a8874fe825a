package bench

import (
	"bufio"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

// rssMiB reads this process's resident set size from /proc (Linux); 0 elsewhere.
func rssMiB() float64 { return ProcRSSMiB("self") }

// peakRSSMiB reads this process's peak resident set size (VmHWM).
func peakRSSMiB() float64 { return procStatusMiB("self", "VmHWM:") }

// resetPeakRSS makes VmHWM start again from the current RSS (Linux
// clear_refs 5); it does nothing where that is not possible.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// ProcRSSMiB returns the VmRSS of /proc/<pid>/status in MiB, 0 if unknown.
func ProcRSSMiB(pid string) float64 { return procStatusMiB(pid, "VmRSS:") }

// writeHeapProfile writes a heap profile (after a GC) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func procStatusMiB(pid, field string) float64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, field) {
			fs := strings.Fields(line)
			if len(fs) >= 2 {
				kb, _ := strconv.ParseFloat(fs[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// procCPU sums the CPU time (user + system) of every process on this
// machine whose command name is one of names, by name: what the servers
// beside the benchmark spent. Processes it may not read are skipped.
func procCPU(names ...string) map[string]time.Duration {
	out := make(map[string]time.Duration, len(names))
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	tick := float64(100) // USER_HZ on Linux
	for _, e := range ents {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ... utime stime are fields 14 and 15.
		s := string(b)
		l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if l < 0 || r < l {
			continue
		}
		comm := s[l+1 : r]
		if !slices.Contains(names, comm) {
			continue
		}
		fs := strings.Fields(s[r+1:])
		if len(fs) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(fs[11], 64)
		st, _ := strconv.ParseFloat(fs[12], 64)
		out[comm] += time.Duration((ut + st) / tick * float64(time.Second))
	}
	return out
}
