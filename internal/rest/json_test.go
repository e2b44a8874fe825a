package rest_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"github.com/flotilla/flotilla/internal/client"
	"github.com/flotilla/flotilla/internal/rest"
)

// The roles' serializer writes a JSONAppender as echo's default writes it:
// the same bytes and newline, and indented on ?pretty.
func TestJSONSerializerWritesAppendersAsEncodingJSON(t *testing.T) {
	res := client.Result{ID: `01J<x>"&`, State: "PENDING", Duplicate: true}
	for _, target := range []string{"/", "/?pretty"} {
		want := httptest.NewRecorder()
		def := echo.New()
		def.GET("/", func(c echo.Context) error { return c.JSON(http.StatusAccepted, res) })
		def.ServeHTTP(want, httptest.NewRequest(http.MethodGet, target, nil))

		got := httptest.NewRecorder()
		e := rest.NewEcho(zerolog.Nop())
		e.GET("/", func(c echo.Context) error { return c.JSON(http.StatusAccepted, res) })
		e.ServeHTTP(got, httptest.NewRequest(http.MethodGet, target, nil))

		if got.Code != http.StatusAccepted || got.Body.String() != want.Body.String() ||
			got.Header().Get(echo.HeaderContentType) != want.Header().Get(echo.HeaderContentType) {
			t.Errorf("%s: %d %q %q, want %d %q %q", target, got.Code, got.Header().Get(echo.HeaderContentType), got.Body,
				want.Code, want.Header().Get(echo.HeaderContentType), want.Body)
		}
	}
	var back client.Result
	if err := json.Unmarshal(res.AppendJSON(nil), &back); err != nil || back != res {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}
