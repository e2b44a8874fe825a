package client_test

import (
	"encoding/json"
	"testing"

	"github.com/flotilla/flotilla/internal/client"
)

// AppendJSON writes what encoding/json writes, ids and states that need
// escaping included.
func TestResultAppendJSON(t *testing.T) {
	for _, r := range []client.Result{
		{ID: "01JABCDEF", State: "PENDING"},
		{ID: "order-7", State: "SUCCESS", Duplicate: true},
		{ID: `a"b\c<d>&é` + "\x01", State: ""},
		{},
	} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("%+v: %s, want %s", r, got, want)
		}
	}
}
