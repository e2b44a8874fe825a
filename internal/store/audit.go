package store

import (
	"context"
	"fmt"
	"time"

	"github.com/flotilla/flotilla/internal/store/dbsqlc"
)

// AuditEntry is one state-changing management action: who (Actor, of
// ActorKind user, token, anonymous or cli), what (Action, e.g.
// "task.cancel"), on what (Target, e.g. the task id), when (At), and how it
// ended (Result: "ok" or the error code; Status: the HTTP status).
type AuditEntry struct {
	ID         int64     `json:"id"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
	ActorKind  string    `json:"actor_kind"`
	Action     string    `json:"action"`
	Target     string    `json:"target"`
	Result     string    `json:"result"`
	Status     int       `json:"status"`
	RemoteAddr string    `json:"remote_addr"`
}

// AuditFilter selects entries of [Store.AuditList]; zero fields select all.
type AuditFilter struct {
	// BeforeID pages: entries older than this one.
	BeforeID int64
	Actor    string
	Action   string
	Since    time.Time
	// Limit is at most 1000; default 100.
	Limit int
}

// AuditAdd appends e to the audit log (ID and At are set by the database).
func (s *Store) AuditAdd(ctx context.Context, e AuditEntry) error {
	err := s.q.AuditInsert(ctx, s.pool, dbsqlc.AuditInsertParams{
		Actor: e.Actor, ActorKind: e.ActorKind, Action: e.Action, Target: e.Target,
		Result: e.Result, Status: int32(e.Status), RemoteAddr: e.RemoteAddr,
	})
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, interpretError(err))
	}
	return nil
}

// AuditList returns entries newest first.
func (s *Store) AuditList(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	f.Limit = min(f.Limit, 1000)
	p := dbsqlc.AuditListParams{Lim: int32(f.Limit)}
	if f.BeforeID > 0 {
		p.BeforeID = &f.BeforeID
	}
	if f.Actor != "" {
		p.Actor = &f.Actor
	}
	if f.Action != "" {
		p.Action = &f.Action
	}
	if !f.Since.IsZero() {
		p.Since = &f.Since
	}
	rows, err := s.q.AuditList(ctx, s.pool, p)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", interpretError(err))
	}
	out := make([]AuditEntry, len(rows))
	for i, r := range rows {
		out[i] = AuditEntry{ID: r.ID, At: r.At.UTC(), Actor: r.Actor, ActorKind: r.ActorKind, Action: r.Action,
			Target: r.Target, Result: r.Result, Status: int(r.Status), RemoteAddr: r.RemoteAddr}
	}
	return out, nil
}
