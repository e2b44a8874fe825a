//go:build faults

package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestChordWorkerKilled (issue #11): a chord of 100 members whose callback
// must run exactly once, 20 times over, each time with a worker SIGKILLed
// while the members run — its unacked members come back after the ack
// wait (2 s here) and the worker that finishes the last of them publishes
// the callback; another may have published it already. Two workers share
// the queue, so they also race on the last members.
func TestChordWorkerKilled(t *testing.T) {
	t.Parallel()
	s := newStack(t, "chord-kill", stackOpts{ackWait: 2 * time.Second, noBeat: true})
	var members []string
	for i := range 100 {
		members = append(members, fmt.Sprintf(`{"task":"sys.sleep","args":{"ms":%d}}`, 50+i%5*10))
	}
	def := []byte(`{"chord":{"group":[` + strings.Join(members, ",") + `],"callback":{"task":"sys.echo","args":{"chord":true}}}}`)
	hc := &http.Client{Timeout: 10 * time.Second}
	getJSON := func(path string, v any) int {
		resp, err := hc.Get(s.web.url + path)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(v)
		return resp.StatusCode
	}
	for rep := range 20 {
		resp, err := hc.Post(s.web.url+"/api/v1/workflows", "application/json", bytes.NewReader(def))
		if err != nil {
			t.Fatalf("rep %d: start: %v", rep, err)
		}
		var started struct{ ID string }
		_ = json.NewDecoder(resp.Body).Decode(&started)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || started.ID == "" {
			t.Fatalf("rep %d: start answered %d", rep, resp.StatusCode)
		}
		// Mid-chord: some members done, many running or waiting.
		time.Sleep(120 * time.Millisecond)
		victim := s.workers[rep%len(s.workers)]
		if err := victim.kill(); err != nil {
			t.Fatal(err)
		}
		if err := victim.start(); err != nil {
			t.Fatal(err)
		}
		var wf struct {
			State  string
			Error  string
			Result struct {
				Chord   bool
				Results []json.RawMessage
			}
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			if getJSON("/api/v1/workflows/"+started.ID, &wf) == http.StatusOK && wf.State != "RUNNING" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rep %d: workflow %s still %s after 60 s; queue %s", rep, started.ID, wf.State, s.queueStats())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if wf.State != "SUCCESS" || !wf.Result.Chord || len(wf.Result.Results) != 100 {
			t.Fatalf("rep %d: workflow %s ended %s (%s) with %d results", rep, started.ID, wf.State, wf.Error, len(wf.Result.Results))
		}
		// The callback ran once: one attempt, one entry in its history.
		var cb struct {
			State    string
			Attempts int
			History  []json.RawMessage
		}
		if code := getJSON("/api/v1/tasks/"+started.ID+"-cb", &cb); code != http.StatusOK {
			t.Fatalf("rep %d: callback state: %d", rep, code)
		}
		if cb.State != "SUCCESS" || cb.Attempts != 1 || len(cb.History) != 1 {
			t.Fatalf("rep %d: callback %s-cb: %s after %d attempts, %d runs in its history; want one run", rep, started.ID, cb.State, cb.Attempts, len(cb.History))
		}
		t.Logf("rep %d: %s SUCCESS, worker%d killed mid-chord, callback ran once", rep, started.ID, rep%len(s.workers)+1)
		s.waitRoleReady(victim, 30*time.Second)
	}
}
