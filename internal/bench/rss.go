package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// rssMiB reads this process's resident set size from /proc (Linux); 0 elsewhere.
func rssMiB() float64 { return ProcRSSMiB("self") }

// ProcRSSMiB returns the VmRSS of /proc/<pid>/status in MiB, 0 if unknown.
func ProcRSSMiB(pid string) float64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmRSS:") {
			fs := strings.Fields(line)
			if len(fs) >= 2 {
				kb, _ := strconv.ParseFloat(fs[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}
