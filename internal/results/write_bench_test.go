package results_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/results/resultstest"
)

// BenchmarkFinalWrite measures what Redis spends on a drained task's final
// write (SUCCESS with its attempt history, the TTL, the move between the
// index's state sets), in batches of 64 as the results writer sends them,
// and what each part of it costs: the variants leave one part out. Each
// task's PENDING hash is written first, untimed, as an enqueue leaves it.
// It reports Redis's own CPU (INFO cpu) per task. Run it alone, on a quiet
// Redis:
//
//	go test -run '^$' -bench BenchmarkFinalWrite -benchtime 100000x ./internal/results/
func BenchmarkFinalWrite(b *testing.B) {
	for _, v := range []struct {
		name                          string
		multi, history, expire, index bool
	}{
		{"as_stored", true, true, true, true},
		{"no_multi", false, true, true, true},
		{"no_history", true, false, true, true},
		{"no_expire", true, true, false, true},
		{"no_index", true, true, true, false},
		{"hset_only", false, false, false, false},
	} {
		b.Run(v.name, func(b *testing.B) {
			rdb, prefix := resultstest.Client(b)
			ctx := b.Context()
			const batch = 64
			key := func(i int) string { return prefix + ":task:" + strconv.Itoa(i) }
			idx := prefix + ":idx:s:"
			for i := 0; i < b.N; i += batch {
				pipe := rdb.TxPipeline()
				var zs []redis.Z
				for j := i; j < min(i+batch, b.N); j++ {
					pipe.HSet(ctx, key(j), "id", strconv.Itoa(j), "task", "sys.ping", "queue", "default", "state", "PENDING",
						"args", `{"i":1234567890,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`, "enqueued_at", "2026-12-07T12:00:00.123456789Z", "t", "1765000000000")
					pipe.Expire(ctx, key(j), time.Hour)
					zs = append(zs, redis.Z{Score: float64(j), Member: strconv.Itoa(j)})
				}
				pipe.ZAdd(ctx, idx+"PENDING", zs...)
				_, err := pipe.Exec(ctx)
				require.NoError(b, err)
			}
			hist := `{"attempt":1,"worker":"bench-1234","started_at":"2026-12-07T12:00:00.123456789Z","finished_at":"2026-12-07T12:00:00.123556789Z","outcome":"success"}`
			before := redisCPU(b, rdb)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				var pipe redis.Pipeliner = rdb.Pipeline()
				if v.multi {
					pipe = rdb.TxPipeline()
				}
				var zs []redis.Z
				var ids []any
				for j := i; j < min(i+batch, b.N); j++ {
					f := []any{"state", "SUCCESS", "started_at", "2026-12-07T12:00:00.123456789Z", "finished_at", "2026-12-07T12:00:00.123556789Z",
						"result", `{"pong":true}`, "attempts", "1", "worker", "bench-1234"}
					if v.history {
						f = append(f, "h.01765000000123556789", hist)
					}
					pipe.HSet(ctx, key(j), f...)
					if v.expire {
						pipe.Expire(ctx, key(j), time.Hour)
					}
					zs = append(zs, redis.Z{Score: float64(j), Member: strconv.Itoa(j)})
					ids = append(ids, strconv.Itoa(j))
				}
				if v.index {
					for _, st := range []string{"PENDING", "STARTED", "RETRY"} {
						pipe.ZRem(ctx, idx+st, ids...)
					}
					pipe.ZAdd(ctx, idx+"SUCCESS", zs...)
				}
				_, err := pipe.Exec(ctx)
				require.NoError(b, err)
			}
			b.StopTimer()
			b.ReportMetric((redisCPU(b, rdb)-before)/float64(b.N)*1e6, "redis_µs/task")
		})
	}
}

// redisCPU is the CPU time Redis has used, in seconds (INFO cpu).
func redisCPU(b *testing.B, rdb *redis.Client) float64 {
	info, err := rdb.Info(b.Context(), "cpu").Result()
	require.NoError(b, err)
	var s float64
	for _, l := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(b, err)
			s += f
		}
	}
	return s
}
