package streams_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jsm.go/api"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v5"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/streams"
)

// files is every definition with its kind, as the named constants list them.
var files = []struct {
	name     string
	consumer bool
}{
	{streams.TasksStream, false},
	{streams.EventsStream, false},
	{streams.DeadStream, false},
	{streams.DelayedStream, false},
	{streams.DefaultConsumer, true},
	{streams.MoverConsumer, true},
}

// durationFields are the nanosecond fields the files must spell out: a missing
// one would silently mean "server default", and a value in seconds (120
// instead of 120000000000) would mean 120 ns.
var durationFields = map[bool][]string{
	false: {"max_age", "duplicate_window"},
	true:  {"ack_wait"},
}

// TestFilesAreNamed checks that FS holds exactly the files the constants name,
// so a new file cannot be added without being applied.
func TestFilesAreNamed(t *testing.T) {
	t.Parallel()
	got, err := fs.Glob(streams.FS, "*.json")
	require.NoError(t, err)
	var want []string
	for _, f := range files {
		want = append(want, f.name)
	}
	slices.Sort(got)
	slices.Sort(want)
	require.Equal(t, want, got)
}

func strictDecode(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(v))
	require.False(t, dec.More(), "more than one JSON value")
}

func TestFilesDecodeStrictly(t *testing.T) {
	t.Parallel()
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			b, err := streams.FS.ReadFile(f.name)
			require.NoError(t, err)

			// nats.go's types, as jet.LoadTopology decodes them.
			if f.consumer {
				var cc jetstream.ConsumerConfig
				strictDecode(t, b, &cc)
				require.NotEmpty(t, cc.Durable)
				require.Equal(t, jetstream.AckExplicitPolicy, cc.AckPolicy)
				require.GreaterOrEqual(t, cc.AckWait, time.Second)
				require.NotEmpty(t, cc.FilterSubject)
			} else {
				var sc jetstream.StreamConfig
				strictDecode(t, b, &sc)
				require.NotEmpty(t, sc.Name)
				require.Equal(t, strings.ToUpper(sc.Name), sc.Name, "stream names are UPPER_SNAKE")
				require.NotEmpty(t, sc.Subjects)
				require.Equal(t, jetstream.FileStorage, sc.Storage)
				require.GreaterOrEqual(t, sc.Duplicates, time.Second)
				if sc.MaxAge != 0 {
					require.GreaterOrEqual(t, sc.MaxAge, time.Minute)
				}
			}
		})
	}
}

// TestFilesNatsCLIFormat checks the files the way `nats stream add --config`
// and `nats consumer add --config` read them: jsm.go's api types, then the
// CLI's JSON schema validation; and that durations are integer nanoseconds.
func TestFilesNatsCLIFormat(t *testing.T) {
	t.Parallel()
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			b, err := streams.FS.ReadFile(f.name)
			require.NoError(t, err)

			var raw map[string]any
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.UseNumber()
			require.NoError(t, dec.Decode(&raw))
			require.NotContains(t, raw, "config", "a bare config, not `nats ... info -j` output")
			for _, k := range durationFields[f.consumer] {
				v, ok := raw[k]
				require.True(t, ok, "%s is missing", k)
				n, ok := v.(json.Number)
				require.True(t, ok, "%s must be a JSON number of nanoseconds, got %T", k, v)
				ns, err := n.Int64()
				require.NoError(t, err, "%s must be an integer number of nanoseconds", k)
				if ns != 0 {
					require.GreaterOrEqual(t, ns, int64(time.Second), "%s=%d looks like seconds, not nanoseconds", k, ns)
				}
			}

			var (
				cfg    any
				schema []byte
			)
			if f.consumer {
				var cc api.ConsumerConfig
				strictDecode(t, b, &cc)
				cfg = cc
				schema, err = cc.Schema()
			} else {
				var sc api.StreamConfig
				strictDecode(t, b, &sc)
				cfg = sc
				schema, err = sc.Schema()
			}
			require.NoError(t, err)
			validateSchema(t, schema, cfg)
		})
	}
}

// validateSchema does what natscli's SchemaValidator does before it creates a
// stream or consumer.
func validateSchema(t *testing.T, schema []byte, cfg any) {
	t.Helper()
	sch, err := jsonschema.CompileString("schema.json", string(schema))
	require.NoError(t, err)
	j, err := json.Marshal(cfg)
	require.NoError(t, err)
	var doc any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&doc))
	require.NoError(t, sch.Validate(doc))
}
