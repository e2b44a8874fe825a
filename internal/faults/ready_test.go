//go:build faults

package faults

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// readySample is one poll of /readyz.
type readySample struct {
	start, end time.Time
	status     int // 0: no answer
	body       string
}

// readyMon polls a role's /readyz every 100 ms and keeps every answer.
type readyMon struct {
	role    *role
	mu      sync.Mutex
	samples []readySample
	stop    chan struct{}
	done    chan struct{}
}

func monitor(rs ...*role) []*readyMon {
	var ms []*readyMon
	for _, r := range rs {
		m := &readyMon{role: r, stop: make(chan struct{}), done: make(chan struct{})}
		go m.loop()
		ms = append(ms, m)
	}
	return ms
}

func (m *readyMon) loop() {
	defer close(m.done)
	hc := &http.Client{Timeout: 3 * time.Second}
	for {
		s := readySample{start: time.Now()}
		resp, err := hc.Get(m.role.readyz())
		if err == nil {
			s.status = resp.StatusCode
			b := make([]byte, 512)
			n, _ := resp.Body.Read(b)
			s.body = strings.TrimSpace(string(b[:n]))
			resp.Body.Close()
		} else {
			s.body = err.Error()
		}
		s.end = time.Now()
		m.mu.Lock()
		m.samples = append(m.samples, s)
		m.mu.Unlock()
		select {
		case <-m.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func stopMonitors(ms []*readyMon) {
	for _, m := range ms {
		close(m.stop)
	}
	for _, m := range ms {
		<-m.done
	}
}

func (m *readyMon) snapshot() []readySample {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]readySample(nil), m.samples...)
}

// firstAfter returns the first sample that ended at or after t and matches.
func (m *readyMon) firstAfter(t time.Time, match func(readySample) bool) (readySample, bool) {
	for _, s := range m.snapshot() {
		if !s.end.Before(t) && match(s) {
			return s, true
		}
	}
	return readySample{}, false
}

func isReady(s readySample) bool    { return s.status == http.StatusOK }
func isNotReady(s readySample) bool { return s.status != http.StatusOK }

// transitions describes every change of the answer, times relative to t0.
func (m *readyMon) transitions(t0 time.Time) string {
	var b strings.Builder
	prev := -1
	for _, s := range m.snapshot() {
		if s.status != prev {
			fmt.Fprintf(&b, " %+.2fs→%d", s.end.Sub(t0).Seconds(), s.status)
			prev = s.status
		}
	}
	return strings.TrimSpace(b.String())
}

// notReadyBetween lists the samples in [from, to] that were not 200.
func (m *readyMon) notReadyBetween(from, to time.Time) []readySample {
	var out []readySample
	for _, s := range m.snapshot() {
		if !s.end.Before(from) && !s.start.After(to) && isNotReady(s) {
			out = append(out, s)
		}
	}
	return out
}
