package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flotilla/flotilla/internal/rest"
)

// TimezoneHeader names the IANA time zone in which a caller wants the times
// of a response, e.g. "X-Timezone: Europe/Berlin".
const TimezoneHeader = "X-Timezone"

// maxZoneLen bounds the header value; the longest IANA name has 32 bytes.
const maxZoneLen = 64

type locationKey struct{}

// WithLocation returns a copy of ctx carrying loc, the zone in which
// [TimezoneSerializer] renders times.
func WithLocation(ctx context.Context, loc *time.Location) context.Context {
	return context.WithValue(ctx, locationKey{}, loc)
}

// LocationFrom returns the zone stored by [WithLocation], or nil.
func LocationFrom(ctx context.Context) *time.Location {
	loc, _ := ctx.Value(locationKey{}).(*time.Location)
	return loc
}

// zones caches loaded locations by name (time.LoadLocation reads and
// parses a zoneinfo file on every call). Only valid names are stored, so it
// holds at most the few hundred IANA zones.
var zones sync.Map // string → *time.Location

// loadZone loads the IANA zone name. "Local" (the server's own zone,
// meaningless to a caller) is refused; "UTC" is accepted.
func loadZone(name string) (*time.Location, error) {
	if loc, ok := zones.Load(name); ok {
		return loc.(*time.Location), nil
	}
	if name == "Local" || name == "" || len(name) > maxZoneLen {
		return nil, fmt.Errorf("not an IANA time zone")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	zones.Store(name, loc)
	return loc, nil
}

// Timezone reads the [TimezoneHeader] of every request. A known IANA zone
// is stored in the request's context ([WithLocation]) so that
// [TimezoneSerializer] renders every time of the JSON response in it; an
// unknown zone is a 400 JSON error with field "X-Timezone" and code
// "invalid_field". Without the header nothing changes. Every response gets
// "Vary: X-Timezone", so caches keep the renderings apart.
//
// Install the serializer too: e.JSONSerializer = api.TimezoneSerializer{}.
func Timezone() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Header().Add(echo.HeaderVary, TimezoneHeader)
			name := c.Request().Header.Get(TimezoneHeader)
			if name == "" {
				return next(c)
			}
			loc, err := loadZone(name)
			if err != nil {
				shown := name
				if len(shown) > maxZoneLen {
					shown = shown[:maxZoneLen] + "…"
				}
				return rest.NewError(http.StatusBadRequest, "invalid_field", TimezoneHeader,
					fmt.Sprintf("%s: unknown time zone %q (want an IANA name such as Europe/Berlin, America/New_York or UTC)", TimezoneHeader, shown))
			}
			r := c.Request()
			c.SetRequest(r.WithContext(WithLocation(r.Context(), loc)))
			return next(c)
		}
	}
}

// TimezoneSerializer is an echo.JSONSerializer that renders the times of a
// response in the zone of the request's context (see [Timezone]). Without
// a zone it encodes exactly as [rest.JSONSerializer].
//
// With a zone, the value is encoded as usual, then every JSON string value
// (object keys are left alone) that parses as RFC 3339 (time.RFC3339Nano,
// the form time.Time marshals to) is replaced by the same instant in that
// zone, formatted with time.RFC3339Nano: "2026-03-01T12:00:00Z" becomes
// "2026-03-01T07:00:00-05:00" for America/New_York. This reaches times
// held in any field — time.Time, *time.Time, strings, nested maps and
// slices, and the JSON of a handler's result (json.RawMessage) — and keeps
// the order of fields and the indentation. The instant never changes.
//
// Deserialize is echo's.
type TimezoneSerializer struct{}

// Serialize writes i as JSON to c's response, times in the request's zone.
func (TimezoneSerializer) Serialize(c echo.Context, i any, indent string) error {
	loc := LocationFrom(c.Request().Context())
	if loc == nil {
		return rest.JSONSerializer{}.Serialize(c, i, indent)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	if err := enc.Encode(i); err != nil {
		return err
	}
	_, err := c.Response().Write(RewriteTimes(buf.Bytes(), loc))
	return err
}

// Deserialize reads the request body as echo's DefaultJSONSerializer does.
func (TimezoneSerializer) Deserialize(c echo.Context, i any) error {
	return echo.DefaultJSONSerializer{}.Deserialize(c, i)
}

// RewriteTimes returns the JSON document b with every string value that
// parses as RFC 3339 rewritten as the same instant in loc (see
// [TimezoneSerializer]). b must be valid JSON; it is returned unchanged
// (not copied) when it holds no time.
func RewriteTimes(b []byte, loc *time.Location) []byte {
	var out []byte
	last := 0 // b[last:] is not copied to out yet
	for i := 0; i < len(b); i++ {
		if b[i] != '"' {
			continue
		}
		// b[i] opens a string; find its closing quote.
		j, escaped := i+1, false
		for ; j < len(b) && b[j] != '"'; j++ {
			if b[j] == '\\' {
				escaped = true
				j++
			}
		}
		if j >= len(b) {
			break // unterminated: not JSON, leave the rest alone
		}
		// An RFC 3339 time has no escapes and is not an object key.
		if s := b[i+1 : j]; !escaped && maybeTime(s) && !isKey(b, j+1) {
			if t, err := time.Parse(time.RFC3339Nano, string(s)); err == nil {
				out = append(out, b[last:i+1]...)
				out = t.In(loc).AppendFormat(out, time.RFC3339Nano)
				last = j
			}
		}
		i = j
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}

// maybeTime is a cheap filter before time.Parse: "2006-01-02T15:04:05Z" is
// the shortest RFC 3339 time, "…05.999999999+07:00" the longest.
func maybeTime(s []byte) bool {
	return len(s) >= 20 && len(s) <= 35 && s[4] == '-' && s[7] == '-' && s[10] == 'T' && s[13] == ':'
}

// isKey reports whether the string that ended before b[k] is an object key.
func isKey(b []byte, k int) bool {
	for ; k < len(b); k++ {
		switch b[k] {
		case ' ', '\t', '\n', '\r':
			continue
		case ':':
			return true
		default:
			return false
		}
	}
	return false
}
