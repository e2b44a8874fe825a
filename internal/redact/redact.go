// Package redact removes secrets from what Flotilla prints: the passwords
// of connection URLs (NATS, Redis, PostgreSQL) in logs, errors and
// `config print`.
package redact

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
)

// Password replaces every password.
const Password = "xxxxx"

// userinfoRE finds "scheme://user:password@" in a URL that url.Parse
// rejects; it is greedy up to the last "@" so a password holding "@" or "/"
// is hidden whole.
var userinfoRE = regexp.MustCompile(`^(\s*[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):.*@`)

// URL returns raw with the password of every URL in it replaced by
// [Password], keeping user names and hosts; raw may be a comma-separated
// list (NATS servers). A NATS URL's lone user (a token) and a password
// query parameter are hidden too. Of a part that does not parse as a URL
// everything before its last "@" is hidden.
func URL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = one(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func one(p string) string {
	u, err := url.Parse(p)
	if err != nil {
		if userinfoRE.MatchString(p) {
			return userinfoRE.ReplaceAllString(p, "${1}:"+Password+"@")
		}
		err = errNoHost
	}
	if err != nil || u.Host == "" && u.Opaque != "" {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			return Password + p[at:]
		}
		return p
	}
	changed := false
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), Password)
			changed = true
		} else if strings.Contains(u.Scheme, "nats") {
			u.User = url.User(Password) // a NATS URL's lone user may be a token
			changed = true
		}
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", Password)
		u.RawQuery = q.Encode()
		changed = true
	}
	if !changed {
		return p
	}
	return u.String()
}

var errNoHost = errors.New("no host")
