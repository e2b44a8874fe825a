package jet_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test shuts its servers down and closes its connections in cleanups,
// so nothing of nats-server or nats.go may outlive the package's tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
