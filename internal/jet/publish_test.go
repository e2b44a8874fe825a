package jet_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla/flotilla/internal/jet"
	"github.com/flotilla/flotilla/internal/jet/jettest"
)

// Publish answers as jetstream's PublishMsg does, on a real server: a
// stored message, a duplicate, an error from the stream and no stream at
// all, with and without a deadline.
func TestPublishLikePublishMsg(t *testing.T) {
	s := jettest.Server(t)
	_, js := jettest.Connect(t, s.ClientURL())
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg := func(id string) *nats.Msg {
		m := nats.NewMsg("p.x")
		m.Data = []byte("body")
		if id != "" {
			m.Header.Set(jetstream.MsgIDHeader, id)
		}
		return m
	}
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{{"deadline", dctx}, {"no deadline", ctx}} {
		t.Run(c.name, func(t *testing.T) {
			first, err := jet.Publish(c.ctx, js, msg("id-"+c.name))
			if err != nil {
				t.Fatal(err)
			}
			if first.Stream != "P" || first.Sequence == 0 || first.Duplicate {
				t.Fatalf("first ack %+v", first)
			}
			again, err := jet.Publish(c.ctx, js, msg("id-"+c.name))
			if err != nil {
				t.Fatal(err)
			}
			if again.Stream != "P" || again.Sequence != first.Sequence || !again.Duplicate {
				t.Fatalf("duplicate ack %+v, first %+v", again, first)
			}
			m := msg("")
			m.Header.Set(jetstream.ExpectedLastSeqHeader, "999999")
			_, err = jet.Publish(c.ctx, js, m)
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
				t.Fatalf("wrong last sequence: %v", err)
			}
			_, want := js.PublishMsg(c.ctx, m)
			if err.Error() != want.Error() {
				t.Fatalf("error %q, PublishMsg says %q", err, want)
			}
			nctx, ncancel := context.WithTimeout(c.ctx, 2*time.Second)
			defer ncancel()
			nm := nats.NewMsg("nostream.x")
			if _, err := jet.Publish(nctx, js, nm); !errors.Is(err, jetstream.ErrNoStreamResponse) {
				t.Fatalf("no stream: %v", err)
			}
		})
	}
}

// The answers the hand parser does not take are decoded in full, the way
// jetstream decodes them.
func TestParseAckForms(t *testing.T) {
	for _, c := range []struct {
		in   string
		want jetstream.PubAck
		err  string
	}{
		{in: `{"stream":"TASKS","seq":42}`, want: jetstream.PubAck{Stream: "TASKS", Sequence: 42}},
		{in: `{"stream":"TASKS","seq":42,"duplicate": true}`, want: jetstream.PubAck{Stream: "TASKS", Sequence: 42, Duplicate: true}},
		{in: `{"stream":"TASKS","seq":42,"duplicate":true}`, want: jetstream.PubAck{Stream: "TASKS", Sequence: 42, Duplicate: true}},
		{in: `{"stream":"TASKS","domain":"hub","seq":7}`, want: jetstream.PubAck{Stream: "TASKS", Domain: "hub", Sequence: 7}},
		{in: `{"stream":"TASKS","seq":7,"batch":"b1","count":3}`, want: jetstream.PubAck{Stream: "TASKS", Sequence: 7}},
		{in: `{"stream":"A\"B","seq":1}`, want: jetstream.PubAck{Stream: `A"B`, Sequence: 1}},
		{in: `{"stream":"TASKS","seq":18446744073709551615}`, want: jetstream.PubAck{Stream: "TASKS", Sequence: 18446744073709551615}},
		{in: `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"TASKS","seq":0}`, err: "nats: nats: API error: code=503 err_code=10077 description=maximum messages exceeded"},
		{in: `{"stream":"","seq":1}`, err: jetstream.ErrInvalidJSAck.Error()},
		{in: `{"stream":"TASKS","seq":}`, err: jetstream.ErrInvalidJSAck.Error()},
		{in: `not json`, err: jetstream.ErrInvalidJSAck.Error()},
	} {
		got, err := jet.ParseAck([]byte(c.in))
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%s: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || *got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.in, got, err, c.want)
		}
	}
}
