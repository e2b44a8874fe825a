package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flotilla/flotilla/internal/schedule"
	"github.com/flotilla/flotilla/internal/store/dbsqlc"
	"github.com/flotilla/flotilla/internal/task"
)

// ScheduleList returns every schedule, ordered by name. NextRunAt is not
// set (it depends on the clock; see [schedule.Compile]).
func (s *Store) ScheduleList(ctx context.Context) ([]schedule.Schedule, error) {
	rows, err := s.q.ScheduleList(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", interpretError(err))
	}
	return fromRows(rows, func(r dbsqlc.ScheduleListRow) schedule.Schedule { return withRuns(r.Schedule, r.LastRunAt, r.RunCount) }), nil
}

// ScheduleListPage returns up to limit schedules whose names sort after
// after ("" for the first page), in name order: a full read in pages, so
// that a million schedules never sit in memory at once.
func (s *Store) ScheduleListPage(ctx context.Context, after string, limit int) ([]schedule.Schedule, error) {
	rows, err := s.q.ScheduleListPage(ctx, s.pool, dbsqlc.ScheduleListPageParams{After: after, Lim: int32(min(limit, math.MaxInt32))})
	if err != nil {
		return nil, fmt.Errorf("list schedules after %q: %w", after, interpretError(err))
	}
	return fromRows(rows, func(r dbsqlc.ScheduleListPageRow) schedule.Schedule {
		return withRuns(r.Schedule, r.LastRunAt, r.RunCount)
	}), nil
}

// ScheduleListVersions returns up to limit enabled schedules' names and
// definition times (updated_at) whose names sort after after, in name
// order.
func (s *Store) ScheduleListVersions(ctx context.Context, after string, limit int) ([]schedule.Version, error) {
	rows, err := s.q.ScheduleListVersions(ctx, s.pool, dbsqlc.ScheduleListVersionsParams{After: after, Lim: int32(min(limit, math.MaxInt32))})
	if err != nil {
		return nil, fmt.Errorf("list schedule versions after %q: %w", after, interpretError(err))
	}
	out := make([]schedule.Version, len(rows))
	for i, r := range rows {
		out[i] = schedule.Version{Name: r.Name, UpdatedAt: r.UpdatedAt.UTC()}
	}
	return out, nil
}

// ScheduleListChanged returns up to limit schedules whose definition
// changed at or after since (bookkeeping aside) and whose names sort after
// after ("" for the first page), in name order.
func (s *Store) ScheduleListChanged(ctx context.Context, since time.Time, after string, limit int) ([]schedule.Schedule, error) {
	rows, err := s.q.ScheduleListChanged(ctx, s.pool, dbsqlc.ScheduleListChangedParams{Since: since, After: after, Lim: int32(min(limit, math.MaxInt32))})
	if err != nil {
		return nil, fmt.Errorf("list changed schedules: %w", interpretError(err))
	}
	return fromRows(rows, func(r dbsqlc.ScheduleListChangedRow) schedule.Schedule {
		return withRuns(r.Schedule, r.LastRunAt, r.RunCount)
	}), nil
}

// ScheduleListNamed returns those of the schedules called names that
// exist, in name order.
func (s *Store) ScheduleListNamed(ctx context.Context, names []string) ([]schedule.Schedule, error) {
	rows, err := s.q.ScheduleListNamed(ctx, s.pool, names)
	if err != nil {
		return nil, fmt.Errorf("list %d schedules: %w", len(names), interpretError(err))
	}
	return fromRows(rows, func(r dbsqlc.ScheduleListNamedRow) schedule.Schedule {
		return withRuns(r.Schedule, r.LastRunAt, r.RunCount)
	}), nil
}

// fromRows converts rows of a read (a schedule with its bookkeeping).
func fromRows[R any](rows []R, conv func(R) schedule.Schedule) []schedule.Schedule {
	out := make([]schedule.Schedule, len(rows))
	for i, r := range rows {
		out[i] = conv(r)
	}
	return out
}

// ScheduleGet returns the schedule called name, or [ErrNotFound].
func (s *Store) ScheduleGet(ctx context.Context, name string) (schedule.Schedule, error) {
	r, err := s.q.ScheduleGet(ctx, s.pool, name)
	if err != nil {
		return schedule.Schedule{}, fmt.Errorf("schedule %s: %w", name, interpretError(err))
	}
	return withRuns(r.Schedule, r.LastRunAt, r.RunCount), nil
}

// ScheduleCreate stores a new runtime schedule (Source is set to
// [schedule.SourceRuntime]; bookkeeping fields are ignored) and returns it
// as stored. sc is normalized and validated first: an invalid schedule is a
// [task.FieldError] (matching [task.ErrInvalid]). A schedule of the
// same name is [ErrConflict].
func (s *Store) ScheduleCreate(ctx context.Context, sc schedule.Schedule) (schedule.Schedule, error) {
	sc.Source = schedule.SourceRuntime
	if err := prepare(&sc); err != nil {
		return schedule.Schedule{}, err
	}
	p := toParams(sc)
	r, err := s.q.ScheduleInsert(ctx, s.pool, dbsqlc.ScheduleInsertParams{
		Name: p.Name, Task: p.Task, Queue: p.Queue, Args: p.Args, Cron: p.Cron, Timezone: p.Timezone,
		Interval: p.Interval, StartAt: p.StartAt, ExpiresAt: p.ExpiresAt, Enabled: p.Enabled,
		OneOff: p.OneOff, Spread: p.Spread, Misfire: p.Misfire, CatchUpMax: p.CatchUpMax,
		Description: p.Description, Source: schedule.SourceRuntime,
	})
	if err != nil {
		err = interpretError(err)
		if errors.Is(err, ErrConflict) {
			return schedule.Schedule{}, fmt.Errorf("schedule %s: %w", sc.Name, ErrConflict)
		}
		return schedule.Schedule{}, fmt.Errorf("create schedule %s: %w", sc.Name, err)
	}
	return fromRow(r), nil
}

// ScheduleReplace rewrites the definition of the existing schedule
// sc.Name (an HTTP PUT): every field but the bookkeeping and Source.
// It returns [ErrNotFound] when there is no such schedule, and
// [ErrFromCode] when the schedule is declared in code and sc differs from
// it in anything but Enabled. sc is normalized and validated first.
func (s *Store) ScheduleReplace(ctx context.Context, sc schedule.Schedule) (schedule.Schedule, error) {
	if err := prepare(&sc); err != nil {
		return schedule.Schedule{}, err
	}
	p := toParams(sc)
	r, err := s.q.ScheduleReplace(ctx, s.pool, dbsqlc.ScheduleReplaceParams(p))
	if errors.Is(err, pgx.ErrNoRows) {
		// Unknown, or from code and different: tell which.
		if _, gerr := s.ScheduleGet(ctx, sc.Name); gerr != nil {
			return schedule.Schedule{}, gerr
		}
		return schedule.Schedule{}, fmt.Errorf("schedule %s: %w", sc.Name, ErrFromCode)
	}
	if err != nil {
		return schedule.Schedule{}, fmt.Errorf("replace schedule %s: %w", sc.Name, interpretError(err))
	}
	return s.withStoredRuns(ctx, r)
}

// ScheduleDelete deletes the schedule called name. It returns
// [ErrNotFound] when there is none and [ErrFromCode] when it is declared in
// code (disable it instead).
func (s *Store) ScheduleDelete(ctx context.Context, name string) error {
	n, err := s.q.ScheduleDelete(ctx, s.pool, name)
	if err != nil {
		return fmt.Errorf("delete schedule %s: %w", name, interpretError(err))
	}
	if n == 1 {
		return nil
	}
	if _, err := s.ScheduleGet(ctx, name); err != nil {
		return err
	}
	return fmt.Errorf("schedule %s: %w", name, ErrFromCode)
}

// ScheduleSetEnabled enables or disables the schedule called name (code
// schedules included) and returns it; [ErrNotFound] if there is none.
func (s *Store) ScheduleSetEnabled(ctx context.Context, name string, enabled bool) (schedule.Schedule, error) {
	r, err := s.q.ScheduleSetEnabled(ctx, s.pool, dbsqlc.ScheduleSetEnabledParams{Enabled: enabled, Name: name})
	if err != nil {
		return schedule.Schedule{}, fmt.Errorf("schedule %s: %w", name, interpretError(err))
	}
	return s.withStoredRuns(ctx, r)
}

// ScheduleSyncCode upserts the schedules declared in code, in one
// transaction (one pipelined batch), each with Source [schedule.SourceCode].
// A new row takes sc.Enabled; an existing row keeps its enabled flag (a
// schedule disabled at runtime stays disabled across restarts) and its
// bookkeeping, and takes every other field from code. A runtime schedule of
// the same name becomes a code schedule. Rows whose definition is unchanged
// are not written, so a restart sends no notifications. Code schedules
// that are no longer declared are left alone.
//
// Every schedule is normalized and validated first; the first invalid one
// fails the whole sync with an error naming it.
func (s *Store) ScheduleSyncCode(ctx context.Context, scs []schedule.Schedule) error {
	if len(scs) == 0 {
		return nil
	}
	params := make([]dbsqlc.ScheduleUpsertCodeParams, len(scs))
	for i := range scs {
		sc := scs[i]
		sc.Source = schedule.SourceCode
		if err := prepare(&sc); err != nil {
			return fmt.Errorf("code schedule %s: %w", sc.Name, err)
		}
		p := toParams(sc)
		params[i] = dbsqlc.ScheduleUpsertCodeParams{
			Name: p.Name, Task: p.Task, Queue: p.Queue, Args: p.Args, Cron: p.Cron, Timezone: p.Timezone,
			Interval: p.Interval, StartAt: p.StartAt, ExpiresAt: p.ExpiresAt, Enabled: p.Enabled,
			OneOff: p.OneOff, Spread: p.Spread, Misfire: p.Misfire, CatchUpMax: p.CatchUpMax,
			Description: p.Description,
		}
	}
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var first error
		s.q.ScheduleUpsertCode(ctx, tx, params).Exec(func(i int, err error) {
			if err != nil && first == nil {
				first = fmt.Errorf("code schedule %s: %w", params[i].Name, interpretError(err))
			}
		})
		return first
	})
	if err != nil {
		return fmt.Errorf("sync code schedules: %w", err)
	}
	return nil
}

// ScheduleRecordRuns writes runs to the bookkeeping in one statement:
// last_run_at becomes the latest of its value and FiredAt, run_count the
// larger of its value and Count (neither moves back, so batches may arrive
// out of order or twice). Of several runs of one name the latest counts.
// Unknown names are ignored (the schedule was deleted meanwhile). A run
// marked OneOff then disables its schedule if that is a one-off (which
// notifies listeners).
func (s *Store) ScheduleRecordRuns(ctx context.Context, runs []schedule.Run) error {
	if len(runs) == 0 {
		return nil
	}
	// One row per name: an upsert may not touch a row twice.
	at := make(map[string]int, len(runs))
	p := dbsqlc.ScheduleRecordRunsParams{
		Names:   make([]string, 0, len(runs)),
		FiredAt: make([]time.Time, 0, len(runs)),
		Counts:  make([]int64, 0, len(runs)),
	}
	var oneOffs []string
	for _, r := range runs {
		if r.OneOff {
			oneOffs = append(oneOffs, r.Name)
		}
		if i, ok := at[r.Name]; ok {
			if r.FiredAt.After(p.FiredAt[i]) {
				p.FiredAt[i] = r.FiredAt
			}
			p.Counts[i] = max(p.Counts[i], r.Count)
			continue
		}
		at[r.Name] = len(p.Names)
		p.Names, p.FiredAt, p.Counts = append(p.Names, r.Name), append(p.FiredAt, r.FiredAt), append(p.Counts, r.Count)
	}
	if err := s.q.ScheduleRecordRuns(ctx, s.pool, p); err != nil {
		return fmt.Errorf("record %d schedule runs: %w", len(runs), interpretError(err))
	}
	if len(oneOffs) > 0 {
		if err := s.q.ScheduleDisableFired(ctx, s.pool, oneOffs); err != nil {
			return fmt.Errorf("disable %d fired one-off schedules: %w", len(oneOffs), interpretError(err))
		}
	}
	return nil
}

// prepare normalizes and validates sc.
func prepare(sc *schedule.Schedule) error {
	sc.Normalize()
	if sc.CatchUpMax > math.MaxInt32 {
		return &task.FieldError{Field: "catch_up_max", Msg: fmt.Sprintf("at most %d", math.MaxInt32)}
	}
	return sc.Validate()
}

// toParams converts a normalized schedule to query parameters; the field
// set is that of ScheduleReplaceParams, which the other writes copy from.
func toParams(sc schedule.Schedule) dbsqlc.ScheduleReplaceParams {
	p := dbsqlc.ScheduleReplaceParams{
		Name: sc.Name, Task: sc.Task, Queue: sc.Queue, Args: sc.Args,
		StartAt: sc.StartAt, ExpiresAt: sc.ExpiresAt, Enabled: sc.Enabled, OneOff: sc.OneOff,
		Spread: time.Duration(sc.Spread), Misfire: sc.Misfire, CatchUpMax: int32(sc.CatchUpMax),
		Description: sc.Description,
	}
	if len(p.Args) == 0 {
		p.Args = json.RawMessage(`{}`)
	}
	if sc.Cron != "" {
		p.Cron = &sc.Cron
	}
	if sc.Timezone != "" {
		p.Timezone = &sc.Timezone
	}
	if sc.Interval != 0 {
		d := time.Duration(sc.Interval)
		p.Interval = &d
	}
	return p
}

// withStoredRuns is schedule r with its bookkeeping, read after a write
// that returned the row alone.
func (s *Store) withStoredRuns(ctx context.Context, r dbsqlc.Schedule) (schedule.Schedule, error) {
	runs, err := s.q.ScheduleRunsGet(ctx, s.pool, r.Name)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fromRow(r), nil
	case err != nil:
		return schedule.Schedule{}, fmt.Errorf("schedule %s bookkeeping: %w", r.Name, interpretError(err))
	}
	return withRuns(r, &runs.LastRunAt, &runs.RunCount), nil
}

// withRuns converts a row with its bookkeeping (nil before the first
// recorded fire) to the domain type.
func withRuns(r dbsqlc.Schedule, last *time.Time, count *int64) schedule.Schedule {
	sc := fromRow(r)
	sc.LastRunAt = utc(last)
	if count != nil {
		sc.RunCount = *count
	}
	return sc
}

// fromRow converts a row (without bookkeeping) to the domain type.
func fromRow(r dbsqlc.Schedule) schedule.Schedule {
	sc := schedule.Schedule{
		Name: r.Name, Task: r.Task, Queue: r.Queue, Args: r.Args,
		StartAt: utc(r.StartAt), ExpiresAt: utc(r.ExpiresAt), Enabled: r.Enabled, OneOff: r.OneOff,
		Spread: schedule.Duration(r.Spread), Misfire: r.Misfire, CatchUpMax: int(r.CatchUpMax),
		Description: r.Description,
		Source:      r.Source, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
	// jsonb prints `{"a": 1}`; compact it. Key order is jsonb's (by
	// length, then bytes), not the writer's.
	var buf bytes.Buffer
	if json.Compact(&buf, r.Args) == nil {
		sc.Args = buf.Bytes()
	}
	if r.Cron != nil {
		sc.Cron = *r.Cron
	}
	if r.Timezone != nil {
		sc.Timezone = *r.Timezone
	}
	if r.Interval != nil {
		sc.Interval = schedule.Duration(*r.Interval)
	}
	return sc
}

// utc returns *t in UTC (pgx returns times in the local zone).
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
