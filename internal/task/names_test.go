package task

import (
	"regexp"
	"testing"
)

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "email.send", true},
		{"deep", "monitor.update_metric_list", true},
		{"one word", "ping", true},
		{"empty", "", false},
		{"upper", "Email.send", false},
		{"double dot", "a..b", false},
		{"trailing dot", "a.", false},
		{"leading dot", ".a", false},
		{"dash", "a-b", false},
		{"wildcard", "a.*", false},
		{"space", "a b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := ValidateName(tc.in); (err == nil) != tc.ok {
				t.Fatalf("ValidateName(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)*$`)
	queueRE = regexp.MustCompile(`^[a-z0-9_-]+$`)
)

// FuzzNames checks the hand-written matchers against the regexps of DESIGN.md.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"a.b", "a..b", "default", "q-1", "", ".", "a.", "A", "x_y.z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validName(s), nameRE.MatchString(s); got != want {
			t.Fatalf("validName(%q) = %v, regexp says %v", s, got, want)
		}
		if got, want := validQueue(s), queueRE.MatchString(s); got != want {
			t.Fatalf("validQueue(%q) = %v, regexp says %v", s, got, want)
		}
	})
}
