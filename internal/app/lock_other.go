//go:build !unix

package app

// DevLockFile is not used where file locks are not available.
const DevLockFile = "dev.lock"

// lockDataDir does nothing where file locks are not available.
func lockDataDir(string) (func(), error) { return func() {}, nil }
