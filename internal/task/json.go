package task

import "encoding/json"

// IsJSONObject reports whether b is a valid JSON object — the only shape
// task args may have.
func IsJSONObject(b []byte) bool {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	if i == len(b) || b[i] != '{' {
		return false
	}
	return json.Valid(b)
}
