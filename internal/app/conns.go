package app

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/config"
	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/redact"
	"github.com/flotilla/flotilla/internal/results"
	"github.com/flotilla/flotilla/internal/store"
)

// Needs says which connections a process uses.
type Needs struct {
	Postgres bool
	Redis    bool
	// Lazy: Redis and PostgreSQL being down at start is not an error (it
	// is logged to Log); their clients connect on first use and after
	// every outage, and the role answers 503 until they are back. Roles
	// start this way; admin commands and dev (which migrates) do not.
	Lazy bool
	Log  zerolog.Logger
	// ResultErrors hears about state writes that failed with nobody waiting.
	ResultErrors func(err error, n int)
	// embed starts an in-process NATS server when nats.url is empty (dev).
	Embed bool
}

// Conns are the connections one process shares between its roles.
type Conns struct {
	Server   *server.Server // embedded NATS (dev only)
	NATSURL  string
	NC       *nats.Conn
	JS       jetstream.JetStream
	Redis    *redis.Client  // nil when results are off and not needed
	Results  *results.Store // nil when tasks.results=false
	Pool     *pgxpool.Pool  // nil for roles without PostgreSQL
	Topology jet.Topology
}

// Open connects what n asks for, in order NATS → Redis → PostgreSQL, and
// applies the JetStream topology when nats.apply_streams is set. With Embed
// (dev) it also creates the database if missing and applies the migrations.
func Open(ctx context.Context, cfg config.Config, n Needs) (_ *Conns, err error) {
	c := &Conns{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	c.Topology, err = jet.LoadTopology(TopologyParams(cfg))
	if err != nil {
		return c, err
	}
	c.NATSURL = cfg.NATS.URL
	if c.NATSURL == "" {
		if !n.Embed {
			return c, errors.New("nats.url is empty: set FLOTILLA_NATS_URL (only the dev role embeds a server)")
		}
		c.Server, err = jet.StartEmbedded(jet.EmbedConfig{Addr: cfg.NATS.EmbedAddr, StoreDir: filepath.Join(cfg.DataDir, "nats")})
		if err != nil {
			return c, err
		}
		c.NATSURL = c.Server.ClientURL()
	}
	c.NC, c.JS, err = jet.Connect(ctx, c.NATSURL, "flotilla-"+cfg.Role, cfg.NATS.InboxPrefix)
	if err != nil {
		return c, fmt.Errorf("%w; start a server (nats-server -js) or set FLOTILLA_NATS_URL", err)
	}
	if cfg.NATS.ApplyStreams {
		if err := jet.ApplyStreams(ctx, c.JS, c.Topology); err != nil {
			return c, err
		}
	}
	if n.Redis {
		if n.Lazy {
			c.Redis, err = results.Dial(cfg.Redis.URL)
			if err == nil {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if perr := c.Redis.Ping(pctx).Err(); perr != nil {
					n.Log.Warn().Err(perr).Str("redis", redact.URL(cfg.Redis.URL)).Msg("Redis is not reachable; starting anyway, not ready until it is")
				}
				cancel()
			}
		} else {
			c.Redis, err = results.Open(ctx, cfg.Redis.URL)
		}
		if err != nil {
			return c, err
		}
		if cfg.Tasks.Results {
			c.Results = results.New(c.Redis, results.Config{Prefix: cfg.Redis.Prefix, TTL: cfg.Tasks.ResultTTL, ErrorFunc: n.ResultErrors, NoIndex: !cfg.Tasks.Index})
		}
	}
	if n.Postgres {
		if n.Embed {
			if _, err := store.EnsureDatabase(ctx, cfg.Database.URL); err != nil {
				return c, err
			}
		}
		if n.Lazy && !n.Embed {
			c.Pool, err = store.Dial(cfg.Database.URL)
			if err == nil {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if perr := c.Pool.Ping(pctx); perr != nil {
					n.Log.Warn().Err(perr).Str("database", redact.URL(cfg.Database.URL)).Msg("PostgreSQL is not reachable; starting anyway, not ready until it is")
				}
				cancel()
			}
		} else {
			c.Pool, err = store.Open(ctx, cfg.Database.URL)
		}
		if err != nil {
			return c, err
		}
		if n.Embed {
			// dev migrates itself; other deployments run `flotilla migrate`.
			if err := store.Migrate(ctx, c.Pool); err != nil {
				return c, err
			}
		}
	}
	return c, nil
}

// TopologyParams derives the deployment settings of streams/ from cfg.
func TopologyParams(cfg config.Config) jet.TopologyParams {
	return jet.TopologyParams{
		Replicas: cfg.NATS.Replicas, TaskMaxMsgs: cfg.NATS.TaskStreamMaxMsgs,
		TaskMaxBytes: cfg.NATS.TaskStreamMaxBytes, AckWait: cfg.NATS.AckWait, LeaseTTL: cfg.Beat.LeaseTTL,
		CancelTTL: cfg.Tasks.CancelTTL,
	}
}

// Close releases everything in reverse order of opening: results writer,
// Redis, PostgreSQL, NATS (drained), embedded server.
func (c *Conns) Close() {
	if c.Results != nil {
		c.Results.Close()
	}
	if c.Redis != nil {
		_ = c.Redis.Close()
	}
	if c.Pool != nil {
		c.Pool.Close()
	}
	if c.NC != nil {
		// Drain flushes pending acks and publishes; it is asynchronous.
		if err := c.NC.Drain(); err == nil {
			for i := 0; i < 500 && !c.NC.IsClosed(); i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
		c.NC.Close()
	}
	if c.Server != nil {
		c.Server.Shutdown()
		c.Server.WaitForShutdown()
	}
}

// DevURLFile, under data_dir, holds the URL of dev's embedded NATS server so
// that admin commands on the same machine find it.
const DevURLFile = "dev-nats.url"
