package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// EnvPrefix starts the name of every environment variable read by [Load].
const EnvPrefix = "FLOTILLA_"

// EnvConfigFile names the environment variable holding the path of the
// optional configuration file, used when [LoadOptions.File] is empty.
const EnvConfigFile = "FLOTILLA_CONFIG"

// kind is the type of a leaf key, which decides how text is parsed into it.
type kind int

const (
	kindString kind = iota
	kindInt
	kindBool
	kindDuration
	kindStrings
)

// expected completes "invalid value …: " for each kind.
func (k kind) expected() string {
	switch k {
	case kindInt:
		return "expected an integer"
	case kindBool:
		return "expected a boolean (true, false, 1 or 0)"
	case kindDuration:
		return `expected a duration such as "30s", "5m" or "1h30m"`
	case kindStrings:
		return "expected a comma-separated list or a list of strings"
	default:
		return "expected a string"
	}
}

// keyInfo describes one leaf key of [Config].
type keyInfo struct {
	key   string       // koanf key, e.g. "nats.embed_addr"
	env   string       // environment variable, e.g. "FLOTILLA_NATS_EMBED_ADDR"
	kind  kind         // how values are parsed
	index []int        // field index path in Config, for reflect.Value.FieldByIndex
	typ   reflect.Type // Go type of the field
}

var (
	durationType = reflect.TypeFor[time.Duration]()

	// keyTable lists every leaf key of Config in declaration order;
	// keyByName and keyByEnv index it. Built once from the struct tags so the
	// key list cannot drift from the struct.
	keyTable  = buildKeyTable()
	keyByName = indexKeys(func(k *keyInfo) string { return k.key })
	keyByEnv  = indexKeys(func(k *keyInfo) string { return k.env })
	// sections are the keys that hold nested keys ("nats", "log", …).
	sections = buildSections()
)

func buildKeyTable() []keyInfo {
	var out []keyInfo
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("koanf")
			if tag == "" || tag == "-" || !f.IsExported() {
				continue
			}
			key := prefix + tag
			idx := append(slices.Clone(index), i)
			if f.Type.Kind() == reflect.Struct && f.Type != durationType {
				walk(f.Type, key+".", idx)
				continue
			}
			out = append(out, keyInfo{
				key:   key,
				env:   EnvName(key),
				kind:  kindOf(f.Type, key),
				index: idx,
				typ:   f.Type,
			})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return out
}

// kindOf maps a field type to its kind; an unsupported type is a programmer
// error in config.go and panics at init.
func kindOf(t reflect.Type, key string) kind {
	switch {
	case t == durationType:
		return kindDuration
	case t.Kind() == reflect.String:
		return kindString
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return kindInt
	case t.Kind() == reflect.Bool:
		return kindBool
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return kindStrings
	}
	panic(fmt.Sprintf("config: key %s has unsupported type %s", key, t))
}

func indexKeys(name func(*keyInfo) string) map[string]*keyInfo {
	m := make(map[string]*keyInfo, len(keyTable))
	for i := range keyTable {
		k := &keyTable[i]
		n := name(k)
		if other, dup := m[n]; dup {
			panic(fmt.Sprintf("config: keys %s and %s both map to %s", other.key, k.key, n))
		}
		m[n] = k
	}
	return m
}

func buildSections() map[string]bool {
	m := make(map[string]bool)
	for _, k := range keyTable {
		parts := strings.Split(k.key, ".")
		for i := 1; i < len(parts); i++ {
			m[strings.Join(parts[:i], ".")] = true
		}
	}
	return m
}

// Keys returns every configuration key, sorted, in the dotted koanf form
// used by files, [EnvName] and [LoadOptions.FlagKeys] (e.g. "nats.url",
// "worker.queues").
func Keys() []string {
	out := make([]string, 0, len(keyTable))
	for _, k := range keyTable {
		out = append(out, k.key)
	}
	slices.Sort(out)
	return out
}

// EnvName returns the environment variable that sets key: [EnvPrefix]
// followed by the key upper-cased with dots replaced by underscores
// ("nats.embed_addr" → "FLOTILLA_NATS_EMBED_ADDR"). It does not check that
// key is known; see [Keys].
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}
