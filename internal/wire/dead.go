package wire

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// NewDeadMsg builds the dead letter of a task message: every original
// header plus Flotilla-Error (reason) and Flotilla-Attempts, the original
// body, on dead.<queue>.<task> (invalid names become [Invalid]).
func NewDeadMsg(orig nats.Header, data []byte, queue, name, reason string, attempts int) *nats.Msg {
	h := carried(orig)
	h[HeaderError] = []string{reason}
	h[HeaderAttempts] = []string{strconv.Itoa(attempts)}
	return &nats.Msg{Subject: DeadSubject(SafeQueue(queue), SafeTask(name)), Header: h, Data: data}
}

// DeadLetter is one message of the DEAD stream as the API shows it.
type DeadLetter struct {
	Seq      uint64          `json:"seq"`
	Subject  string          `json:"subject"`
	ID       string          `json:"id"`
	Task     string          `json:"task"`
	Queue    string          `json:"queue"`
	Error    string          `json:"error"`
	Attempts int             `json:"attempts"`
	Time     time.Time       `json:"time"`
	Args     json.RawMessage `json:"-"`
	Header   nats.Header     `json:"-"`
}

// DecodeDead reads a DEAD message stored at seq.
func DecodeDead(seq uint64, subject string, stored time.Time, h nats.Header, data []byte) DeadLetter {
	d := DeadLetter{Seq: seq, Subject: subject, Time: stored, Args: data, Header: h,
		ID: h.Get(HeaderID), Task: h.Get(HeaderTask), Error: h.Get(HeaderError)}
	d.Attempts, _ = strconv.Atoi(h.Get(HeaderAttempts))
	d.Queue, _, _ = ParseDeadSubject(subject)
	return d
}

// RequeueMsgID is the deduplication id of the requeue of the dead letter at
// DEAD sequence seq: the same on every try, so a repeated or retried
// requeue enqueues the task once.
func RequeueMsgID(id string, seq uint64) string {
	return id + ":requeue:" + strconv.FormatUint(seq, 10)
}

// NewRequeueMsg builds the task message that puts dead letter d back on its
// queue as a fresh run: the same task id, the retry budget from the start
// (deliveries restart), no expiry, Flotilla-Enqueued now, and the dead
// letter's own headers, notify subject and server headers left behind.
func NewRequeueMsg(d DeadLetter, now time.Time) (*nats.Msg, error) {
	if SafeTask(d.Task) == Invalid || SafeQueue(d.Queue) == Invalid || d.ID == "" {
		return nil, fmt.Errorf("dead letter %d cannot be requeued: its task name, queue or id is invalid (%s)", d.Seq, d.Error)
	}
	h := carried(d.Header, HeaderError, HeaderAttempts, HeaderNotify, HeaderExpires, HeaderMsgID, HeaderQueue)
	h.Set(HeaderMsgID, RequeueMsgID(d.ID, d.Seq))
	h.Set(HeaderEnqueued, now.UTC().Format(time.RFC3339Nano))
	return &nats.Msg{Subject: TaskSubject(d.Queue, d.Task), Header: h, Data: d.Args}, nil
}

// carried copies the headers of a stored message into a new one, leaving
// out the given ones and the server's Nats-* headers but Nats-Msg-Id: those
// (an atomic batch's Nats-Batch-*, a schedule's Nats-Schedule-*) were
// instructions to the stream the message was published to, and would be
// wrong ones to the next.
func carried(h nats.Header, without ...string) nats.Header {
	out := make(nats.Header, len(h)+2)
	for k, v := range h {
		if strings.HasPrefix(k, "Nats-") && k != HeaderMsgID || slices.Contains(without, k) {
			continue
		}
		out[k] = v
	}
	return out
}
