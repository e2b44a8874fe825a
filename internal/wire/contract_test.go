package wire_test

import (
	"encoding/json"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/wire"
	"github.com/flotilla/flotilla/streams"
)

// exportedConsts returns the exported string constants of package wire by
// name, read from its source, so that a constant added later is checked
// without editing this test.
func exportedConsts(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	out := map[string]string{}
	for _, de := range entries {
		if !strings.HasSuffix(de.Name(), ".go") || strings.HasSuffix(de.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, de.Name(), nil, 0)
		require.NoError(t, err)
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !n.IsExported() || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					out[n.Name] = constant.StringVal(constant.MakeFromLiteral(lit.Value, lit.Kind, 0))
				}
			}
		}
	}
	require.NotEmpty(t, out)
	return out
}

// readmeWireFormat returns the README's "Wire format" section and every
// `code span` in it.
func readmeWireFormat(t *testing.T) (string, map[string]bool) {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	s := string(b)
	start := strings.Index(s, "### Wire format")
	require.GreaterOrEqual(t, start, 0, "README has a Wire format section")
	end := strings.Index(s[start:], "\n## ")
	require.Greater(t, end, 0)
	section := s[start : start+end]
	spans := map[string]bool{}
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(section, -1) {
		spans[m[1]] = true
	}
	return section, spans
}

// TestReadmeDocumentsTheWireFormat: every name and header of package wire,
// every field of Event and every subject pattern appears in the README's
// wire-format section, and every Flotilla header the section names exists.
func TestReadmeDocumentsTheWireFormat(t *testing.T) {
	t.Parallel()
	section, spans := readmeWireFormat(t)
	consts := exportedConsts(t)
	documented := func(what, v string) {
		t.Helper()
		if !spans[v] && !strings.Contains(section, "`"+v+"`") {
			t.Errorf("README wire format: %s `%s` is not documented", what, v)
		}
	}
	known := map[string]bool{}
	for name, v := range consts {
		switch {
		case strings.HasPrefix(name, "Header"):
			known[v] = true
			documented("header "+name, v)
		case strings.HasPrefix(name, "Stream"), strings.HasPrefix(name, "Event"), strings.HasPrefix(name, "Origin"),
			strings.HasPrefix(name, "Code"), strings.HasPrefix(name, "Lease"),
			name == "ConsumerMover", name == "ServiceName", name == "ServiceQueueGroup", name == "SyncQueue", name == "Invalid":
			documented(name, v)
		}
	}
	for _, v := range []string{
		wire.TaskSubject("<queue>", "<task>"), wire.QueueFilter("<queue>"), wire.ConsumerName("<queue>"),
		wire.DelayedSubject("<queue>", "<id>"), wire.DueSubject("<queue>", "<id>"), wire.DueFilter,
		wire.EventSubject("<kind>", "<queue>", "<task>"), wire.DeadSubject("<queue>", "<task>"),
		wire.ExecSubject("<task>"), wire.OriginBeat("<schedule>"), "beat:<schedule>:<unix fire time>",
		wire.NotifyPrefix("_INBOX_<who>") + "<token>",
		wire.RequeueMsgID("<id>", 0)[:len("<id>:requeue:")] + "<seq>",
	} {
		documented("subject or id", v)
	}
	et := reflect.TypeFor[wire.Event]()
	for i := range et.NumField() {
		tag, _, _ := strings.Cut(et.Field(i).Tag.Get("json"), ",")
		documented("Event field "+et.Field(i).Name, tag)
	}
	for _, k := range wire.EventKinds {
		documented("event kind", k)
	}
	for _, h := range regexp.MustCompile(`Flotilla-[A-Za-z-]+[A-Za-z]`).FindAllString(section, -1) {
		if !known[h] {
			t.Errorf("README wire format names header %s, which package wire does not define", h)
		}
	}
}

// subjectMatches reports whether subject matches the NATS filter.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}

// decodeFile decodes the streams/ file name into a T.
func decodeFile[T any](t *testing.T, name string) T {
	t.Helper()
	b, err := streams.FS.ReadFile(name)
	require.NoError(t, err)
	var v T
	require.NoError(t, json.Unmarshal(b, &v))
	return v
}

func streamFile(t *testing.T, name string) jetstream.StreamConfig {
	return decodeFile[jetstream.StreamConfig](t, name)
}

// TestStreamsMatchTheWireFormat: the definitions in streams/ carry the
// names of package wire and capture exactly the subjects it builds.
func TestStreamsMatchTheWireFormat(t *testing.T) {
	t.Parallel()
	covers := func(sc jetstream.StreamConfig, subject string) bool {
		for _, f := range sc.Subjects {
			if subjectMatches(f, subject) {
				return true
			}
		}
		return false
	}
	all := []jetstream.StreamConfig{}
	for file, want := range map[string]struct {
		name     string
		subjects []string
	}{
		streams.TasksStream:   {wire.StreamTasks, []string{wire.TaskSubject("default", "sys.echo"), wire.TaskSubject("q-1", "a.b.c")}},
		streams.DelayedStream: {wire.StreamDelayed, []string{wire.DelayedSubject("q", "01J"), wire.DueSubject("q", "01J")}},
		streams.EventsStream:  {wire.StreamEvents, []string{wire.EventSubject(wire.EventFailed, "default", "sys.fail")}},
		streams.DeadStream:    {wire.StreamDead, []string{wire.DeadSubject("default", "sys.fail"), wire.DeadSubject(wire.Invalid, wire.Invalid)}},
	} {
		sc := streamFile(t, file)
		require.Equal(t, want.name, sc.Name, file)
		for _, subj := range want.subjects {
			require.True(t, covers(sc, subj), "%s (%s) does not capture %s", file, sc.Name, subj)
		}
		all = append(all, sc)
	}
	// No subject is captured by two streams (JetStream refuses overlaps;
	// this catches a subject built for the wrong stream).
	for _, subj := range []string{wire.TaskSubject("d", "t"), wire.DelayedSubject("q", "1"), wire.DueSubject("q", "1"),
		wire.EventSubject("sent", "d", "t"), wire.DeadSubject("d", "t")} {
		n := 0
		for _, sc := range all {
			if covers(sc, subj) {
				n++
			}
		}
		require.Equal(t, 1, n, "streams capturing %s", subj)
	}
	// Exec requests, replies and events are not stored as tasks.
	require.False(t, covers(streamFile(t, streams.TasksStream), wire.ExecSubject("sys.echo")))

	q := decodeFile[jetstream.ConsumerConfig](t, streams.DefaultConsumer)
	require.Equal(t, wire.ConsumerName("default"), q.Durable)
	require.Equal(t, wire.QueueFilter("default"), q.FilterSubject)
	require.True(t, subjectMatches(q.FilterSubject, wire.TaskSubject("default", "sys.echo")))
	require.False(t, subjectMatches(q.FilterSubject, wire.TaskSubject("other", "sys.echo")))
	mv := decodeFile[jetstream.ConsumerConfig](t, streams.MoverConsumer)
	require.Equal(t, wire.ConsumerMover, mv.Durable)
	require.Equal(t, wire.DueFilter, mv.FilterSubject)
	require.True(t, subjectMatches(mv.FilterSubject, wire.DueSubject("q", "01J")))
	require.False(t, subjectMatches(mv.FilterSubject, wire.DelayedSubject("q", "01J")))
}
