//go:build faults

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Request deadline of web (request_timeout) and what a client allows on top.
const (
	requestDeadline = 5 * time.Second
	clientTimeout   = requestDeadline + 500*time.Millisecond
)

// stableCodes are the 503 codes a client may see when a dependency fails.
var stableCodes = map[string]bool{
	"redis_unavailable": true, "database_unavailable": true, "nats_unavailable": true,
	"timeout": true, "queue_full": true, "publish_unconfirmed": true,
}

// spec is one task to enqueue.
type spec struct {
	Task string         `json:"task"`
	Args map[string]any `json:"args"`
	ID   string         `json:"id"`
}

// mixSpecs returns n tasks with ids prefix-00000…: even ones sys.sleep of
// sleepMS, odd ones sys.echo whose result must equal its args.
func mixSpecs(prefix string, n, sleepMS int) []spec {
	out := make([]spec, n)
	for i := range out {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		if i%2 == 0 {
			out[i] = spec{Task: "sys.sleep", Args: map[string]any{"ms": sleepMS}, ID: id}
		} else {
			out[i] = spec{Task: "sys.echo", Args: map[string]any{"i": i, "scenario": prefix, "pad": "0123456789abcdef"}, ID: id}
		}
	}
	return out
}

// answer is one HTTP answer (or its absence) the driver saw.
type answer struct {
	ID         string
	Try        int // 1 for the first request of this id
	At         time.Time
	Latency    time.Duration
	Status     int // 0: no answer
	Code       string
	RetryAfter string
	BodyID     string
	Duplicate  bool
	Err        string // transport error
	Timeout    bool   // the client gave up after clientTimeout
}

func (a answer) String() string {
	if a.Status == 0 {
		return fmt.Sprintf("id %s try %d: no answer after %s: %s", a.ID, a.Try, a.Latency.Round(time.Millisecond), a.Err)
	}
	return fmt.Sprintf("id %s try %d: %d code=%q Retry-After=%q in %s", a.ID, a.Try, a.Status, a.Code, a.RetryAfter, a.Latency.Round(time.Millisecond))
}

// problem says what is wrong with an enqueue answer, or "".
func (a answer) problem() string {
	switch {
	case a.Timeout:
		return fmt.Sprintf("no answer within %s (request_timeout %s + margin)", clientTimeout, requestDeadline)
	case a.Status == 0:
		return "transport error: " + a.Err
	case a.Latency > clientTimeout:
		return fmt.Sprintf("answered after %s, over %s", a.Latency.Round(time.Millisecond), clientTimeout)
	case a.Status == http.StatusAccepted:
		if a.BodyID != a.ID {
			return fmt.Sprintf("202 for id %q", a.BodyID)
		}
		return ""
	case a.Status == http.StatusServiceUnavailable:
		if n, err := strconv.Atoi(a.RetryAfter); err != nil || n <= 0 {
			return "503 without a valid Retry-After"
		}
		if !stableCodes[a.Code] {
			return fmt.Sprintf("503 with unexpected code %q", a.Code)
		}
		if a.Code == "publish_unconfirmed" && a.BodyID != a.ID {
			return fmt.Sprintf("publish_unconfirmed names id %q, not the one sent", a.BodyID)
		}
		return ""
	default:
		return fmt.Sprintf("unexpected status %d (code %q)", a.Status, a.Code)
	}
}

// driver enqueues tasks over HTTP from a few goroutines and retries every
// refused one with the same id until it is accepted.
type driver struct {
	url        string // web base URL
	specs      []spec
	goroutines int
	burst      int           // the first burst tasks go as fast as possible
	rate       float64       // then first attempts per second; 0 = as fast as possible
	retryCap   time.Duration // longest wait honoured of a Retry-After
	hc         *http.Client

	mu          sync.Mutex
	answers     []answer
	accepted    map[string]time.Time // first 202
	unconfirmed map[string]int
	started     time.Time
	finished    time.Time
	done        chan struct{}
	cancel      context.CancelFunc
}

func newDriver(webURL string, specs []spec, burst int, rate float64) *driver {
	return &driver{
		url: webURL, specs: specs, goroutines: 8, burst: burst, rate: rate, retryCap: time.Second,
		hc: &http.Client{Timeout: clientTimeout, Transport: &http.Transport{
			MaxIdleConnsPerHost: 16, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		}},
		accepted: map[string]time.Time{}, unconfirmed: map[string]int{}, done: make(chan struct{}),
	}
}

// start runs the load in the background until every task is accepted or
// the driver is stopped.
func (d *driver) start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.started = time.Now()
	next := make(chan int, len(d.specs))
	go func() {
		defer close(next)
		var every time.Duration
		if d.rate > 0 {
			every = time.Duration(float64(time.Second) / d.rate)
		}
		t0 := time.Now()
		for i := range d.specs {
			if every > 0 && i >= d.burst {
				if i == d.burst {
					// The rate starts once the burst is accepted.
					for d.acceptedCount() < d.burst && ctx.Err() == nil {
						time.Sleep(10 * time.Millisecond)
					}
					t0 = time.Now()
				}
				if w := time.Until(t0.Add(time.Duration(i-d.burst) * every)); w > 0 {
					select {
					case <-time.After(w):
					case <-ctx.Done():
						return
					}
				}
			}
			next <- i
		}
	}()
	var wg sync.WaitGroup
	for range d.goroutines {
		wg.Go(func() {
			for i := range next {
				d.enqueue(ctx, d.specs[i])
			}
		})
	}
	go func() {
		wg.Wait()
		d.mu.Lock()
		d.finished = time.Now()
		d.mu.Unlock()
		close(d.done)
	}()
}

// wait waits until every task was accepted, at most until deadline, then
// stops the driver; it reports whether every task was accepted.
func (d *driver) wait(deadline time.Time) bool {
	select {
	case <-d.done:
	case <-time.After(time.Until(deadline)):
		d.cancel()
		<-d.done
	}
	d.cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.accepted) == len(d.specs)
}

// enqueue sends s until accepted (or ctx ends).
func (d *driver) enqueue(ctx context.Context, s spec) {
	body, _ := json.Marshal(s)
	for try := 1; ctx.Err() == nil; try++ {
		a := d.post(ctx, s.ID, try, body)
		if ctx.Err() != nil && a.Status == 0 {
			return // stopped, not an answer
		}
		d.mu.Lock()
		d.answers = append(d.answers, a)
		if a.Status == http.StatusAccepted {
			d.accepted[s.ID] = a.At.Add(a.Latency)
		}
		if a.Code == "publish_unconfirmed" {
			d.unconfirmed[s.ID]++
		}
		d.mu.Unlock()
		if a.Status == http.StatusAccepted {
			return
		}
		wait := time.Second
		if n, err := strconv.Atoi(a.RetryAfter); err == nil && n > 0 {
			wait = min(time.Duration(n)*time.Second, d.retryCap)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (d *driver) post(ctx context.Context, id string, try int, body []byte) answer {
	a := answer{ID: id, Try: try, At: time.Now()}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.url+"/api/v1/tasks", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.hc.Do(req)
	a.Latency = time.Since(a.At)
	if err != nil {
		var ne net.Error
		a.Timeout = errors.As(err, &ne) && ne.Timeout()
		a.Err = err.Error()
		return a
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a.Latency = time.Since(a.At)
	a.Status = resp.StatusCode
	a.RetryAfter = resp.Header.Get("Retry-After")
	var v struct {
		ID        string `json:"id"`
		Code      string `json:"code"`
		Duplicate bool   `json:"duplicate"`
	}
	_ = json.Unmarshal(b, &v)
	a.Code, a.BodyID, a.Duplicate = v.Code, v.ID, v.Duplicate
	return a
}

// acceptedCount is how many tasks were accepted so far.
func (d *driver) acceptedCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.accepted)
}

// waitAccepted waits until n tasks were accepted or d passed.
func (d *driver) waitAccepted(n int, within time.Duration) {
	deadline := time.Now().Add(within)
	for d.acceptedCount() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// snapshot returns a copy of the answers.
func (d *driver) snapshot() []answer {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]answer(nil), d.answers...)
}

// missing lists the ids never accepted.
func (d *driver) missing() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, s := range d.specs {
		if _, ok := d.accepted[s.ID]; !ok {
			out = append(out, s.ID)
		}
	}
	return out
}

// lastAnswer is the last answer recorded for id.
func (d *driver) lastAnswer(id string) (answer, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.answers) - 1; i >= 0; i-- {
		if d.answers[i].ID == id {
			return d.answers[i], true
		}
	}
	return answer{}, false
}

// acceptedBetween lists the ids first accepted in [from, to).
func (d *driver) acceptedBetween(from, to time.Time) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for id, at := range d.accepted {
		if !at.Before(from) && at.Before(to) {
			out = append(out, id)
		}
	}
	return out
}
