package config

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"

	"github.com/flotilla/flotilla/internal/redact"
)

// RedactedPassword replaces passwords in URLs shown by [Config.Redacted].
const RedactedPassword = redact.Password

// Redacted returns a copy of c with the password of every URL replaced by
// [RedactedPassword], keeping the user name and host: database.url,
// redis.url and each server of the comma-separated nats.url. Use it
// whenever a Config is shown or logged.
func (c Config) Redacted() Config {
	r := c
	r.Worker.Queues = slices.Clone(c.Worker.Queues)
	r.Database.URL = redact.URL(c.Database.URL)
	r.Redis.URL = redact.URL(c.Redis.URL)
	if r.NATS.URL != "" {
		r.NATS.URL = redact.URL(c.NATS.URL)
	}
	return r
}

// Print writes the redacted configuration (see [Config.Redacted]) to w as
// format "yaml" or "json", nested under the keys listed by [Keys], with
// durations as Go duration strings ("30s"). The output is a valid
// configuration file. It returns an error for any other format, or the
// write error.
func (c Config) Print(w io.Writer, format string) error {
	m := c.Redacted().toMap()
	var (
		b   []byte
		err error
	)
	switch format {
	case "yaml":
		b, err = yaml.Parser().Marshal(m)
	case "json":
		b, err = json.MarshalIndent(m, "", "  ")
		b = append(b, '\n')
	default:
		return fmt.Errorf("config: print: unknown format %q (want yaml or json)", format)
	}
	if err != nil {
		return fmt.Errorf("config: print: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// toMap returns c as nested maps keyed like the configuration file.
func (c Config) toMap() map[string]any {
	root := map[string]any{}
	cv := reflect.ValueOf(c)
	for _, k := range keyTable {
		fv := cv.FieldByIndex(k.index)
		var v any
		switch k.kind {
		case kindDuration:
			v = time.Duration(fv.Int()).String()
		case kindInt:
			v = fv.Int()
		case kindBool:
			v = fv.Bool()
		case kindStrings:
			list := make([]string, fv.Len()) // never nil: prints [] rather than null
			for i := range list {
				list[i] = fv.Index(i).String()
			}
			v = list
		default:
			v = fv.String()
		}
		parts := strings.Split(k.key, ".")
		m := root
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
	}
	return root
}
