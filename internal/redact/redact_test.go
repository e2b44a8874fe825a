package redact_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/redact"
)

func TestURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://web:s3cret@n1:4222,nats://web:s3cret@n2:4222", "nats://web:xxxxx@n1:4222,nats://web:xxxxx@n2:4222"},
		{"nats://tok3n@n1:4222", "nats://xxxxx@n1:4222"},
		{"redis://:pw@redis:6379/0", "redis://:xxxxx@redis:6379/0"},
		{"postgres://flotilla:pw@db:5432/flotilla?sslmode=require", "postgres://flotilla:xxxxx@db:5432/flotilla?sslmode=require"},
		{"postgres://db/flotilla?user=u&password=pw", "postgres://db/flotilla?password=xxxxx&user=u"},
		{"postgres://postgres@127.0.0.1:5432/flotilla", "postgres://postgres@127.0.0.1:5432/flotilla"},
		{"user:pw@host:4222", "xxxxx@host:4222"},
	} {
		require.Equal(t, tc.want, redact.URL(tc.in), tc.in)
		require.NotContains(t, redact.URL(tc.in), "s3cret")
	}
}
