package outbox

import "context"

// SetAfterPublish installs a hook that runs after the publishes of a claim
// were acknowledged and before its rows are deleted (tests kill the relay
// there).
func SetAfterPublish(r *Relay, fn func(ctx context.Context)) { r.afterPublish = fn }
