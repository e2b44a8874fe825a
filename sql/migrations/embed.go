// Package migrations embeds Flotilla's PostgreSQL migrations: goose files
// named NNNNN_what.sql with Up and Down sections. sqlc reads the same files
// as the schema. Migrations are forward-only outside dev: never edit one
// that was merged, add a new one.
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
