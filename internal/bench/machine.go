package bench

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes where the run happened.
type Machine struct {
	CPUModel         string `json:"cpu_model"`
	CPUs             int    `json:"cpus"`
	GOMAXPROCS       int    `json:"gomaxprocs"`
	MemTotalMB       int64  `json:"mem_total_mb"`
	MemAvailableMB   int64  `json:"mem_available_mb"`
	Kernel           string `json:"kernel"`
	GoVersion        string `json:"go_version"`
	OS               string `json:"os"`
	LoadAvgStart     string `json:"loadavg_start"`
	LoadAvgEnd       string `json:"loadavg_end"`
	PostgresVersion  string `json:"postgres_version"`
	PostgresSettings string `json:"postgres_settings"`
}

func machineFacts() Machine {
	m := Machine{
		CPUs:         runtime.NumCPU(),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		GoVersion:    runtime.Version(),
		OS:           runtime.GOOS + "/" + runtime.GOARCH,
		LoadAvgStart: loadAvg(),
		CPUModel:     "unknown",
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := meminfo()
	m.MemTotalMB, m.MemAvailableMB = mem["MemTotal"]/1024, mem["MemAvailable"]/1024
	if b, err := os.ReadFile("/proc/version"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.Kernel = strings.Join(f[:3], " ")
		}
	}
	return m
}

// meminfo returns /proc/meminfo in KiB.
func meminfo() map[string]int64 {
	out := make(map[string]int64)
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			out[k] = n
		}
	}
	return out
}

// loadAvg is the 1, 5 and 15 minute load average ("" when unknown).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// heapInUse is the Go heap in use (call runtime.GC first for live data).
func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
