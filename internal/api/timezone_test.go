package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/flotilla/flotilla/internal/api"
	"github.com/flotilla/flotilla/internal/rest"
)

type tzInner struct {
	At   time.Time  `json:"at"`
	Seen *time.Time `json:"seen"`
}

type tzBody struct {
	Name     string            `json:"name"`
	Created  time.Time         `json:"created"`
	Started  *time.Time        `json:"started"`
	Finished *time.Time        `json:"finished"`
	Inner    tzInner           `json:"inner"`
	List     []time.Time       `json:"list"`
	Meta     map[string]any    `json:"meta"`
	ByTime   map[string]int    `json:"by_time"`
	Result   json.RawMessage   `json:"result"`
	Labels   map[string]string `json:"labels"`
}

var (
	tWinter = time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	tSummer = time.Date(2026, 7, 1, 23, 30, 15, 123456789, time.UTC)
)

func tzFixture() tzBody {
	kolkata, _ := time.LoadLocation("Asia/Kolkata")
	started := tSummer
	return tzBody{
		Name:     "2026-01-15", // a date, not a time: unchanged
		Created:  tWinter,
		Started:  &started,
		Finished: nil,
		Inner:    tzInner{At: tWinter.In(kolkata), Seen: &started},
		List:     []time.Time{tWinter, tSummer},
		Meta: map[string]any{
			"deep":   []any{map[string]any{"when": tWinter}, "x", 1.5, true, nil},
			"string": "2026-01-15T12:00:00Z",
			"count":  12345678901234567,
		},
		ByTime: map[string]int{"2026-01-15T12:00:00Z": 1}, // keys stay
		Result: json.RawMessage(`{"finished_at":"2026-07-01T23:30:15.5Z","n":1}`),
		Labels: map[string]string{"quote": `say "2026-01-15T12:00:00Z"`, "html": "<b>&</b>"},
	}
}

func tzEcho() *echo.Echo {
	e := rest.NewEcho(zerolog.Nop())
	e.JSONSerializer = api.TimezoneSerializer{}
	e.Use(api.Timezone())
	e.GET("/t", func(c echo.Context) error { return c.JSON(http.StatusOK, tzFixture()) })
	e.POST("/echo", func(c echo.Context) error {
		var m map[string]any
		if err := c.Bind(&m); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, m)
	})
	return e
}

// instantsEqual fails unless got is want's JSON with every time string
// replaced by the same instant in loc.
func instantsEqual(t *testing.T, want, got any, loc *time.Location, path string) {
	t.Helper()
	compareJSON(t, want, got, loc, path, true)
}

// compareJSON is instantsEqual; with strict false, a time string may also
// be left as it was (one written with escapes, which the encoder never
// produces).
func compareJSON(t *testing.T, want, got any, loc *time.Location, path string, strict bool) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		require.True(t, ok, path)
		require.Len(t, g, len(w), path)
		for k, v := range w {
			require.Contains(t, g, k, path)
			compareJSON(t, v, g[k], loc, path+"."+k, strict)
		}
	case []any:
		g, ok := got.([]any)
		require.True(t, ok, path)
		require.Len(t, g, len(w), path)
		for i := range w {
			compareJSON(t, w[i], g[i], loc, path+"[]", strict)
		}
	case string:
		g, ok := got.(string)
		require.True(t, ok, path)
		wt, err := time.Parse(time.RFC3339Nano, w)
		if err != nil {
			require.Equal(t, w, g, path)
			return
		}
		if !strict && g == w {
			return
		}
		gt, err := time.Parse(time.RFC3339Nano, g)
		require.NoError(t, err, path)
		require.True(t, wt.Equal(gt), "%s: instant changed: %s → %s", path, w, g)
		require.Equal(t, wt.In(loc).Format(time.RFC3339Nano), g, path)
	default:
		require.Equal(t, want, got, path)
	}
}

func TestTimezoneRendersTimes(t *testing.T) {
	t.Parallel()
	e := tzEcho()
	plain := do(e, http.MethodGet, "/t")
	require.Equal(t, http.StatusOK, plain.Code)
	var want any
	require.NoError(t, json.Unmarshal(plain.Body.Bytes(), &want))

	tests := []struct {
		zone             string
		winter, summer   string
		resultFinishedAt string
	}{
		{"America/New_York", "2026-01-15T07:00:00-05:00", "2026-07-01T19:30:15.123456789-04:00", "2026-07-01T19:30:15.5-04:00"},
		{"Asia/Kolkata", "2026-01-15T17:30:00+05:30", "2026-07-02T05:00:15.123456789+05:30", "2026-07-02T05:00:15.5+05:30"},
		{"UTC", "2026-01-15T12:00:00Z", "2026-07-01T23:30:15.123456789Z", "2026-07-01T23:30:15.5Z"},
	}
	for _, tt := range tests {
		t.Run(tt.zone, func(t *testing.T) {
			t.Parallel()
			loc, err := time.LoadLocation(tt.zone)
			require.NoError(t, err)
			rec := do(e, http.MethodGet, "/t", "X-Timezone", tt.zone)
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			require.Equal(t, echo.MIMEApplicationJSON, rec.Header().Get("Content-Type"))
			require.Contains(t, rec.Header().Values("Vary"), "X-Timezone")

			var got tzBody
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got), rec.Body.String())
			in := tzFixture()
			require.True(t, in.Created.Equal(got.Created), "the instant is unchanged")
			require.True(t, in.Started.Equal(*got.Started))
			require.Nil(t, got.Finished)

			var raw map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &raw))
			require.Equal(t, tt.winter, raw["created"])
			require.Equal(t, tt.summer, raw["started"])
			inner := raw["inner"].(map[string]any)
			require.Equal(t, tt.winter, inner["at"])
			require.Equal(t, tt.summer, inner["seen"])
			require.Equal(t, []any{tt.winter, tt.summer}, raw["list"])
			meta := raw["meta"].(map[string]any)
			require.Equal(t, tt.winter, meta["deep"].([]any)[0].(map[string]any)["when"])
			require.Equal(t, tt.winter, meta["string"], "a time held in a string")
			require.Equal(t, "2026-01-15", raw["name"])
			require.Equal(t, map[string]any{"2026-01-15T12:00:00Z": 1.0}, raw["by_time"], "keys are not rewritten")
			require.Equal(t, tt.resultFinishedAt, raw["result"].(map[string]any)["finished_at"], "the handler's raw JSON result too")
			require.Equal(t, `say "2026-01-15T12:00:00Z"`, raw["labels"].(map[string]any)["quote"])
			require.Contains(t, rec.Body.String(), `"count":12345678901234567`, "numbers keep their digits")
			require.Contains(t, rec.Body.String(), `\u003cb\u003e\u0026\u003c/b\u003e`, "escaping as echo's")

			instantsEqual(t, want, raw, loc, "$")

			// Field order and layout are the encoder's.
			require.Equal(t, strings.Count(plain.Body.String(), `"`), strings.Count(rec.Body.String(), `"`))
			require.Less(t, strings.Index(rec.Body.String(), `"name"`), strings.Index(rec.Body.String(), `"created"`))
			require.Less(t, strings.Index(rec.Body.String(), `"created"`), strings.Index(rec.Body.String(), `"started"`))
		})
	}
}

func TestTimezoneWithoutHeaderIsPlain(t *testing.T) {
	t.Parallel()
	e := tzEcho()
	rec := do(e, http.MethodGet, "/t")
	require.Equal(t, http.StatusOK, rec.Code)
	var want bytes.Buffer
	require.NoError(t, json.NewEncoder(&want).Encode(tzFixture()))
	require.Equal(t, want.String(), rec.Body.String(), "exactly echo's default encoding")
	require.Contains(t, rec.Header().Values("Vary"), "X-Timezone")

	// Pretty output is rewritten with its indentation kept.
	rec = do(e, http.MethodGet, "/t?pretty", "X-Timezone", "Asia/Kolkata")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), "\n  \"created\": \"2026-01-15T17:30:00+05:30\",\n")

	// Request bodies decode as usual.
	req := `{"at":"2026-01-15T12:00:00Z"}`
	rec = doBody(e, http.MethodPost, "/echo", req, "X-Timezone", "America/New_York")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.JSONEq(t, `{"at":"2026-01-15T07:00:00-05:00"}`, rec.Body.String())
}

func TestTimezoneUnknownZone(t *testing.T) {
	t.Parallel()
	e := tzEcho()
	for _, zone := range []string{"Mars/Olympus_Mons", "Local", "../../etc/passwd", "/etc/localtime", strings.Repeat("A", 300)} {
		rec := do(e, http.MethodGet, "/t", "X-Timezone", zone)
		require.Equal(t, http.StatusBadRequest, rec.Code, zone)
		body := decodeError(t, rec)
		require.Equal(t, "invalid_field", body.Code, zone)
		require.Equal(t, "X-Timezone", body.Field, zone)
		require.Contains(t, body.Error, "X-Timezone: unknown time zone", zone)
		require.Less(t, len(body.Error), 300, "the value is shortened")
	}
}

func TestRewriteTimes(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	tests := []struct {
		name, in, want string
	}{
		{"no time", `{"a":"b","n":1}`, `{"a":"b","n":1}`},
		{"value", `{"t":"2026-01-15T12:00:00Z"}`, `{"t":"2026-01-15T07:00:00-05:00"}`},
		{"offset in", `["2026-01-15T17:30:00+05:30"]`, `["2026-01-15T07:00:00-05:00"]`},
		{"bare string", `"2026-01-15T12:00:00Z"`, `"2026-01-15T07:00:00-05:00"`},
		{"key kept", `{"2026-01-15T12:00:00Z" : "2026-01-15T12:00:00Z"}`, `{"2026-01-15T12:00:00Z" : "2026-01-15T07:00:00-05:00"}`},
		{"escaped kept", `["2026-01-15T12:00:00Z\u0000"]`, `["2026-01-15T12:00:00Z\u0000"]`},
		{"escaped quote before", `["\"", "2026-01-15T12:00:00Z"]`, `["\"", "2026-01-15T07:00:00-05:00"]`},
		{"not rfc3339", `["2026-01-15 12:00:00Z","2026-13-15T12:00:00Z","2026-01-15T12:00:00"]`, `["2026-01-15 12:00:00Z","2026-13-15T12:00:00Z","2026-01-15T12:00:00"]`},
		{"unterminated", `["2026-01-15T12:00:00Z`, `["2026-01-15T12:00:00Z`},
		{"empty", ``, ``},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, string(api.RewriteTimes([]byte(tt.in), ny)), tt.name)
	}
}

func FuzzRewriteTimes(f *testing.F) {
	for _, s := range []string{`{"t":"2026-01-15T12:00:00Z"}`, `["\"2026-01-15T12:00:00Z"]`, `{"2026-01-15T12:00:00.5+01:00":1}`, `"x"`} {
		f.Add(s)
	}
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, in string) {
		out := api.RewriteTimes([]byte(in), kolkata)
		if !json.Valid([]byte(in)) {
			return
		}
		require.True(t, json.Valid(out), "%s → %s", in, out)
		var a, b any
		require.NoError(t, json.Unmarshal([]byte(in), &a))
		require.NoError(t, json.Unmarshal(out, &b))
		compareJSON(t, a, b, kolkata, "$", false)
	})
}

func doBody(e *echo.Echo, method, path, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}
