// Package schedule is the model of a periodic task: its fields, validation,
// and the arithmetic of when it fires — cron (5 or 6 fields, IANA time zone)
// or a fixed interval, a deterministic per-schedule spread offset, start and
// expiry, and the misfire policies that decide what a new leader fires for
// ticks missed during an outage. It knows nothing of storage or NATS.
package schedule

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/flotilla/flotilla/internal/task"
)

// Misfire policies: what to fire for ticks missed while no leader fired.
const (
	// MisfireSkip fires none of the missed ticks.
	MisfireSkip = "skip"
	// MisfireOnce fires the latest missed tick once.
	MisfireOnce = "once"
	// MisfireCatchUp fires every missed tick, at most CatchUpMax of them (the latest).
	MisfireCatchUp = "catch_up"
)

// Sources of a schedule.
const (
	SourceCode    = "code"
	SourceRuntime = "runtime"
)

// DefaultCatchUpMax caps catch-up when a schedule sets none.
const DefaultCatchUpMax = 100

// MinInterval is the shortest interval a schedule may have (also the
// shortest "@every" of a cron expression).
const MinInterval = time.Second

// MaxCatchUp caps catch_up_max: a catch-up fires at most this many missed
// ticks of one schedule at once.
const MaxCatchUp = 10_000

// Duration is a time.Duration that reads and writes JSON as a Go duration string.
type Duration time.Duration

// MarshalJSON writes "1m30s" (or "" for zero).
func (d Duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a Go duration string such as "30s"; "" is zero.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a Go duration string such as \"30s\"")
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a Go duration such as \"30s\"", s)
	}
	*d = Duration(v)
	return nil
}

// Schedule is a periodic task as stored and shown by the API.
type Schedule struct {
	Name        string          `json:"name"`
	Task        string          `json:"task"`
	Queue       string          `json:"queue"`
	Args        json.RawMessage `json:"args"`
	Cron        string          `json:"cron,omitempty"`
	Timezone    string          `json:"timezone,omitempty"`
	Interval    Duration        `json:"interval,omitempty"`
	StartAt     *time.Time      `json:"start_at,omitempty"`
	ExpiresAt   *time.Time      `json:"expires_at,omitempty"`
	Enabled     bool            `json:"enabled"`
	OneOff      bool            `json:"one_off"`
	Spread      Duration        `json:"spread,omitempty"`
	Misfire     string          `json:"misfire"`
	CatchUpMax  int             `json:"catch_up_max"`
	Description string          `json:"description"`

	// Read-only bookkeeping.
	LastRunAt *time.Time `json:"last_run_at"`
	RunCount  int64      `json:"run_count"`
	NextRunAt *time.Time `json:"next_run_at"`
	Source    string     `json:"source"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$`)

// ValidateName checks a schedule name: letters, digits and _ . : - , at most
// 200 characters (it appears in Msg-Ids and URLs).
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return &task.FieldError{Field: "name", Msg: fmt.Sprintf("%q is invalid: want 1-200 characters of [A-Za-z0-9_.:-], starting with a letter or digit", name)}
	}
	return nil
}

// Normalize fills defaults: queue "default", args {}, misfire "once",
// catch_up_max 100, time zone UTC for cron.
func (s *Schedule) Normalize() {
	if s.Queue == "" {
		s.Queue = task.DefaultQueue
	}
	if len(s.Args) == 0 || string(s.Args) == "null" {
		s.Args = json.RawMessage(`{}`)
	}
	if s.Misfire == "" {
		s.Misfire = MisfireOnce
	}
	if s.CatchUpMax == 0 {
		s.CatchUpMax = DefaultCatchUpMax
	}
	if s.Cron != "" && s.Timezone == "" {
		s.Timezone = "UTC"
	}
	if s.Source == "" {
		s.Source = SourceRuntime
	}
}

// Validate reports every problem of s, each a *task.FieldError (matching
// task.ErrInvalid), joined.
func (s *Schedule) Validate() error {
	var errs []error
	add := func(field, format string, a ...any) {
		errs = append(errs, &task.FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	if err := ValidateName(s.Name); err != nil {
		errs = append(errs, err)
	}
	if err := task.ValidateName(s.Task); err != nil {
		add("task", "%v", err)
	}
	if err := task.ValidateQueue(s.Queue); err != nil {
		add("queue", "%v", err)
	}
	if len(s.Args) > 0 && !task.IsJSONObject(s.Args) {
		add("args", "must be a JSON object")
	}
	switch {
	case s.Cron == "" && s.Interval == 0:
		add("cron", "give a cron expression or an interval")
	case s.Cron != "" && s.Interval != 0:
		add("interval", "give a cron expression or an interval, not both")
	case s.Interval != 0 && time.Duration(s.Interval) < MinInterval:
		add("interval", "%s is below the minimum of %s", time.Duration(s.Interval), MinInterval)
	}
	if s.Timezone != "" {
		if _, err := time.LoadLocation(s.Timezone); err != nil {
			add("timezone", "unknown IANA time zone %q", s.Timezone)
		} else if s.Cron == "" {
			add("timezone", "applies to cron schedules only")
		}
	}
	if s.Cron != "" {
		if strings.Contains(s.Cron, "TZ=") {
			add("cron", "set the time zone with the timezone field, not in the expression")
		} else if _, err := parseCron(s.Cron, ""); err != nil {
			errs = append(errs, err)
		} else if every, ok := strings.CutPrefix(strings.TrimSpace(s.Cron), "@every "); ok {
			// robfig/cron turns a negative or sub-second @every into 1s.
			if d, err := time.ParseDuration(strings.TrimSpace(every)); err != nil || d < MinInterval {
				add("cron", "%q: @every needs a duration of at least %s", s.Cron, MinInterval)
			}
		}
	}
	switch s.Misfire {
	case MisfireSkip, MisfireOnce, MisfireCatchUp, "":
	default:
		add("misfire", "%q is not one of skip, once, catch_up", s.Misfire)
	}
	if s.CatchUpMax < 0 || s.CatchUpMax > MaxCatchUp {
		add("catch_up_max", "must be from 0 to %d, got %d", MaxCatchUp, s.CatchUpMax)
	}
	if s.Spread < 0 {
		add("spread", "must not be negative")
	}
	if s.StartAt != nil && s.ExpiresAt != nil && !s.ExpiresAt.After(*s.StartAt) {
		add("expires_at", "must be after start_at")
	}
	if len(s.Description) > 1000 {
		add("description", "at most 1000 characters")
	}
	if len(errs) == 0 && s.Spread > 0 {
		t, err := CompileTiming(*s)
		if err == nil && t.period > 0 && time.Duration(s.Spread) > t.period {
			add("spread", "%s is longer than the schedule's period of %s", time.Duration(s.Spread), t.period)
		}
	}
	return errors.Join(errs...)
}

var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Timing is the part of a compiled schedule that does not depend on its
// name: the parsed cron expression in its time zone or the interval, the
// shortest period, start, expiry, spread, misfire policy and catch-up cap.
// Many schedules share one (beat keeps one per distinct [Timing.Key]); it
// is immutable and safe for concurrent use.
type Timing struct {
	key        string
	cron       cron.Schedule
	loc        *time.Location
	interval   time.Duration
	start      *time.Time
	expires    *time.Time
	spread     time.Duration
	period     time.Duration // shortest gap between ticks seen; 0 if unknown
	misfire    string
	catchUpMax int
	oneOff     bool
}

// TimingKey is the key of s's timing: schedules with equal keys have
// equal timings.
func TimingKey(s Schedule) string {
	var b strings.Builder
	b.Grow(64)
	b.WriteString(s.Cron)
	b.WriteByte(0)
	b.WriteString(s.Timezone)
	b.WriteByte(0)
	b.WriteString(strconv.FormatInt(int64(s.Interval), 36))
	b.WriteByte(0)
	if s.StartAt != nil {
		b.WriteString(strconv.FormatInt(s.StartAt.UnixNano(), 36))
	}
	b.WriteByte(0)
	if s.ExpiresAt != nil {
		b.WriteString(strconv.FormatInt(s.ExpiresAt.UnixNano(), 36))
	}
	b.WriteByte(0)
	b.WriteString(strconv.FormatInt(int64(s.Spread), 36))
	b.WriteByte(0)
	b.WriteString(s.Misfire)
	b.WriteByte(0)
	b.WriteString(strconv.Itoa(s.CatchUpMax))
	if s.OneOff {
		b.WriteString("\x00once")
	}
	return b.String()
}

// parsed is a cron expression parsed in a time zone, with its shortest
// period: the costly part of compiling, cached by expression and zone.
type parsed struct {
	cron   cron.Schedule
	loc    *time.Location
	period time.Duration
}

// maxParsed bounds the cache of parsed expressions (it is emptied when
// full: expressions are few in practice, each user-defined one costs a
// parse again at worst).
const maxParsed = 4096

var parsedCache = struct {
	sync.Mutex
	m map[string]*parsed
}{m: map[string]*parsed{}}

func parseCron(expr, tz string) (*parsed, error) {
	key := expr + "\x00" + tz
	parsedCache.Lock()
	p, ok := parsedCache.m[key]
	parsedCache.Unlock()
	if ok {
		return p, nil
	}
	p = &parsed{loc: time.UTC}
	if tz != "" {
		loc, err := time.LoadLocation(tz)
		if err != nil {
			return nil, &task.FieldError{Field: "timezone", Msg: fmt.Sprintf("unknown IANA time zone %q", tz)}
		}
		p.loc = loc
	}
	cs, err := parser.Parse(expr)
	if err != nil {
		return nil, &task.FieldError{Field: "cron", Msg: fmt.Sprintf("%q: %v", expr, err)}
	}
	p.cron = cs
	// The shortest gap over a sample of ticks bounds the spread.
	t := time.Date(2025, 1, 1, 0, 0, 0, 0, p.loc)
	prev := cs.Next(t)
	for i := 0; i < 16 && !prev.IsZero(); i++ {
		n := cs.Next(prev)
		if n.IsZero() {
			break
		}
		if g := n.Sub(prev); p.period == 0 || g < p.period {
			p.period = g
		}
		prev = n
	}
	parsedCache.Lock()
	if len(parsedCache.m) >= maxParsed {
		clear(parsedCache.m)
	}
	parsedCache.m[key] = p
	parsedCache.Unlock()
	return p, nil
}

// CompileTiming parses the timing of s (see [Timing]). Errors are
// [task.FieldError]s naming the field.
func CompileTiming(s Schedule) (*Timing, error) {
	t := &Timing{
		key: TimingKey(s), loc: time.UTC, start: s.StartAt, expires: s.ExpiresAt,
		spread: time.Duration(s.Spread), misfire: s.Misfire, catchUpMax: s.CatchUpMax, oneOff: s.OneOff,
	}
	if s.Cron != "" {
		p, err := parseCron(s.Cron, s.Timezone)
		if err != nil {
			return nil, err
		}
		t.cron, t.loc, t.period = p.cron, p.loc, p.period
	} else {
		if time.Duration(s.Interval) < MinInterval {
			return nil, &task.FieldError{Field: "interval", Msg: fmt.Sprintf("give a cron expression or an interval of at least %s", MinInterval)}
		}
		t.interval = time.Duration(s.Interval)
		t.period = t.interval
	}
	return t, nil
}

// Key is the timing's [TimingKey].
func (t *Timing) Key() string { return t.key }

// Period returns the shortest gap between ticks (0 if unknown).
func (t *Timing) Period() time.Duration { return t.period }

// OneOff reports whether the schedule fires once.
func (t *Timing) OneOff() bool { return t.oneOff }

// Offset is the spread offset of the schedule called name with this timing.
func (t *Timing) Offset(name string) time.Duration { return Offset(name, t.spread, t.period) }

// Compiled is a schedule ready to compute fire times: its [Timing] and
// its own spread offset.
type Compiled struct {
	S      Schedule
	T      *Timing
	offset time.Duration
}

// Compile parses s's cron expression and time zone and computes its offset.
func Compile(s Schedule) (*Compiled, error) {
	t, err := CompileTiming(s)
	if err != nil {
		return nil, err
	}
	return &Compiled{S: s, T: t, offset: t.Offset(s.Name)}, nil
}

// Offset is the deterministic spread offset of schedule name: a hash of the
// name mapped into [0, spread), never reaching period.
func Offset(name string, spread, period time.Duration) time.Duration {
	if spread <= 0 {
		return 0
	}
	if period > 0 && spread > period {
		spread = period
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	// Whole milliseconds keep Msg-Ids and logs readable.
	ms := int64(spread / time.Millisecond)
	if ms <= 0 {
		return 0
	}
	return time.Duration(h.Sum64()%uint64(ms)) * time.Millisecond
}

// Offset returns the spread offset of this schedule.
func (c *Compiled) Offset() time.Duration { return c.offset }

// Period returns the shortest gap between ticks (0 if unknown).
func (c *Compiled) Period() time.Duration { return c.T.period }

// Next returns the first fire time strictly after t (see [Timing.Next]).
func (c *Compiled) Next(t time.Time) (time.Time, bool) { return c.T.Next(t, c.offset) }

// Due returns the fire times to publish now (see [Timing.Due]).
func (c *Compiled) Due(last, now time.Time, grace time.Duration) []time.Time {
	return c.T.Due(last, c.S.CreatedAt, now, grace, c.offset)
}

// nextTick returns the first nominal tick (without offset) strictly after t.
func (t *Timing) nextTick(after time.Time) time.Time {
	if t.cron != nil {
		return t.cron.Next(after.In(t.loc))
	}
	iv := t.interval
	// Interval ticks are anchored at start_at, or the Unix epoch, so that
	// every replica computes the same ticks.
	var anchor time.Time
	if t.start != nil {
		anchor = *t.start
	} else {
		anchor = time.Unix(0, 0).UTC()
	}
	if after.Before(anchor) {
		return anchor
	}
	k := after.Sub(anchor)/iv + 1
	// time.Duration overflows after ~292 years of nanoseconds; intervals of
	// at least a second from 1970 stay far below that.
	return anchor.Add(k * iv)
}

// Next returns the first fire time strictly after after of a schedule
// with spread offset offset, honouring start and expiry; ok is false when
// the schedule never fires again.
func (t *Timing) Next(after time.Time, offset time.Duration) (time.Time, bool) {
	from := after.Add(-offset)
	if t.start != nil && from.Before(t.start.Add(-time.Nanosecond)) {
		from = t.start.Add(-time.Nanosecond)
	}
	tick := t.nextTick(from)
	if tick.IsZero() {
		return time.Time{}, false
	}
	fire := tick.Add(offset)
	if t.expires != nil && fire.After(*t.expires) {
		return time.Time{}, false
	}
	return fire, true
}

// Due returns the fire times to publish now for a schedule with spread
// offset offset, created at created, whose last recorded fire is last
// (zero if it never fired), at time now, applying the misfire policy to
// ticks older than grace. Ticks within grace of now count as on time, not
// missed. The result is in ascending order.
func (t *Timing) Due(last, created, now time.Time, grace, offset time.Duration) []time.Time {
	from := last
	if from.IsZero() {
		// Never fired: nothing is "missed" before the schedule existed.
		from = now.Add(-grace)
		if !created.IsZero() && created.After(from) {
			from = created
		}
	}
	var missed, onTime []time.Time
	limit := t.catchUpMax
	if limit <= 0 {
		limit = DefaultCatchUpMax
	}
	// After a long outage, start where at most limit+2 periods remain: older
	// ticks could never be fired anyway, and walking them costs time.
	if t.period > 0 {
		if horizon := now.Add(-grace - time.Duration(limit+2)*t.period); from.Before(horizon) {
			from = horizon
		}
	}
	at := from
	for {
		f, ok := t.Next(at, offset)
		if !ok || f.After(now) {
			break
		}
		if now.Sub(f) <= grace {
			onTime = append(onTime, f)
		} else {
			missed = append(missed, f)
			if len(missed) > limit {
				missed = missed[1:] // keep the latest
			}
		}
		at = f
	}
	switch t.misfire {
	case MisfireSkip:
		missed = nil
	case MisfireCatchUp:
	default: // once
		if len(missed) > 1 {
			missed = missed[len(missed)-1:]
		}
		if len(missed) == 1 && len(onTime) > 0 {
			missed = nil // an on-time fire covers it
		}
	}
	return append(missed, onTime...)
}

// Version names a schedule and when its definition last changed
// (Schedule.UpdatedAt): enough to tell whether a copy is current.
type Version struct {
	Name      string
	UpdatedAt time.Time
}

// Run is the bookkeeping of schedule Name after a fire: its latest fire
// FiredAt and its absolute run count Count (counted on from the value
// loaded from the database), so that writing it twice — after a lost commit
// acknowledgement — changes nothing.
type Run struct {
	Name    string
	FiredAt time.Time
	Count   int64
	// OneOff marks the fire of a one-off schedule, which is then done.
	OneOff bool
}
