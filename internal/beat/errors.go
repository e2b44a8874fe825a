package beat

import "errors"

// ErrNoStats is returned by [Stats] when the lease bucket holds no stats
// document: no replica has led within the bucket's TTL.
var ErrNoStats = errors.New("beat: no stats published")
