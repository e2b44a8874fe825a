package jet

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream API error codes Flotilla acts on that nats.go names no
// constant for, taken from the server's own table.
const (
	// codeStoreFailed: the stream's store refused a message; with discard
	// new at a limit the description says "maximum messages exceeded" or
	// "maximum bytes exceeded".
	codeStoreFailed = jetstream.ErrorCode(server.JSStreamStoreFailedF)
	// codeMsgDeleteFailed: deleting a message failed; for a sequence that
	// holds none the server says "stream store EOF" or "no message found".
	codeMsgDeleteFailed = jetstream.ErrorCode(server.JSStreamMsgDeleteFailedF)
)

func apiCode(err error) (jetstream.ErrorCode, string, bool) {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return 0, "", false
	}
	return apiErr.ErrorCode, apiErr.Description, true
}

// IsStreamFull reports whether a publish was refused because the stream is
// at its message or byte limit (discard new).
func IsStreamFull(err error) bool {
	code, desc, ok := apiCode(err)
	return ok && code == codeStoreFailed && strings.Contains(desc, "exceeded")
}

// IsAtomicDuplicate reports whether the server refused an atomic batch
// because one of its messages repeats a Nats-Msg-Id stored within the
// duplicate window (or one of the batch's own).
func IsAtomicDuplicate(err error) bool {
	code, _, ok := apiCode(err)
	return ok && code == jetstream.ErrorCode(server.JSAtomicPublishContainsDuplicateMessageErr)
}

// IsAtomicDisabled reports whether the stream refused an atomic batch
// because its allow_atomic is off.
func IsAtomicDisabled(err error) bool {
	code, _, ok := apiCode(err)
	return ok && code == jetstream.ErrorCode(server.JSAtomicPublishDisabledErr)
}

// IsAtomicTooManyOpen reports whether the server refused to open another
// atomic batch: the stream (50) or the server (1,000) has as many open as
// it allows (jetstream.limits max_batch_inflight_*). A retry later can pass.
func IsAtomicTooManyOpen(err error) bool {
	code, _, ok := apiCode(err)
	return ok && code == jetstream.ErrorCode(server.JSAtomicPublishTooManyInflight)
}

// IsMsgTooLarge reports whether a publish was refused for its size.
func IsMsgTooLarge(err error) bool {
	code, _, ok := apiCode(err)
	return ok && code == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

// gone reports whether a message-delete failure says the sequence holds no
// message (deleted before, or beyond the stream's end).
func gone(desc string) bool {
	return strings.Contains(desc, "EOF") || strings.Contains(desc, "not found") || strings.Contains(desc, "no message")
}

// isNoMessage reports whether a get or delete found no message at its sequence.
func isNoMessage(err error) bool {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true
	}
	if code, desc, ok := apiCode(err); ok {
		return code == jetstream.JSErrCodeMessageNotFound || code == codeMsgDeleteFailed && gone(desc)
	}
	// DeleteMsg wraps the API error into ErrMsgDeleteUnsuccessful as text
	// only, so the code is read from it.
	return errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) &&
		strings.Contains(err.Error(), fmt.Sprintf("err_code=%d", codeMsgDeleteFailed)) && gone(err.Error())
}

// PublishUnconfirmed reports whether a publish went out but its
// acknowledgement did not come back (a timeout, a connection lost while
// waiting, a garbled reply): the message may or may not be stored. Publish
// it again with the same Nats-Msg-Id to be sure; the server drops the
// second copy within the duplicate window.
func PublishUnconfirmed(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrInvalidJSAck) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// Unavailable reports whether NATS or JetStream could not take a request
// now, so that nothing was stored: no server or stream answered, the
// connection is closed or draining, the stream is missing, or JetStream
// answered 503 (no quorum, no leader yet, temporarily unavailable).
func Unavailable(err error) bool {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound)
}

// ErrUnavailable matches errors of requests that NATS JetStream could not
// answer now (see [Unavailable]): the HTTP roles answer 503
// nats_unavailable with Retry-After.
var ErrUnavailable = errors.New("NATS JetStream unavailable")

// Wrap returns err as the failure of op, matching [ErrUnavailable] when
// NATS could not take the request now or did not answer in time. A nil err
// stays nil.
func Wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if Unavailable(err) || errors.Is(err, nats.ErrTimeout) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
