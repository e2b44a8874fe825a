package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"io/fs"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/wire"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// assetVersions maps each static file to a hash of its content, appended
// to its URL so that browsers may cache it for long.
var assetVersions = func() map[string]string {
	m := map[string]string{}
	_ = fs.WalkDir(staticFS, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := staticFS.ReadFile(path)
		sum := sha256.Sum256(b)
		m[strings.TrimPrefix(path, "static/")] = hex.EncodeToString(sum[:6])
		return nil
	})
	return m
}()

var funcs = template.FuncMap{
	"asset": func(p string) string { return "/static/" + p + "?v=" + assetVersions[p] },
	"timeTag": func(v any) template.HTML {
		t, ok := asTime(v)
		if !ok {
			return "–"
		}
		iso := t.UTC().Format(time.RFC3339)
		return template.HTML(`<time datetime="` + iso + `">` + html.EscapeString(t.UTC().Format("2006-01-02 15:04:05 UTC")) + `</time>`)
	},
	"timeAbs": func(v any) template.HTML {
		t, ok := asTime(v)
		if !ok {
			return ""
		}
		return template.HTML(`<span class="muted mono">` + html.EscapeString(t.UTC().Format("2006-01-02 15:04:05.000 UTC")) + `</span>`)
	},
	"iso": func(v any) string {
		t, _ := asTime(v)
		return t.UTC().Format(time.RFC3339)
	},
	"utc": func(v any) string {
		t, _ := asTime(v)
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"ageOr": func(s *float64, dflt string) string {
		if s == nil {
			return dflt
		}
		return humanDuration(time.Duration(*s * float64(time.Second)))
	},
	"duration": func(a, b any) string {
		ta, ok1 := asTime(a)
		tb, ok2 := asTime(b)
		if !ok1 || !ok2 {
			return "–"
		}
		return humanDuration(tb.Sub(ta))
	},
	"rate": func(r *float64) string {
		if r == nil {
			return "–"
		}
		return fmt.Sprintf("%.1f", *r)
	},
	"deref": func(n *uint64) uint64 { return *n },
	"fold":  fold,
	"join":  strings.Join,
	"jsonBlock": func(raw json.RawMessage) template.HTML {
		if len(raw) == 0 || string(raw) == "null" {
			return `<p class="muted">none</p>`
		}
		pretty := prettyJSON(raw)
		const max = 4096
		if len(pretty) <= max {
			return template.HTML("<pre>" + html.EscapeString(pretty) + "</pre>")
		}
		return template.HTML("<pre>" + html.EscapeString(pretty[:max]) + "\n…</pre><details><summary>All " +
			fmt.Sprint(len(pretty)) + " characters</summary><pre>" + html.EscapeString(pretty) + "</pre></details>")
	},
	"jsonText": func(raw json.RawMessage) string {
		if len(raw) == 0 {
			return "{}"
		}
		return prettyJSON(raw)
	},
	"outcomeClass": func(o string) string {
		switch o {
		case "success":
			return "ok"
		case "retry":
			return "warn"
		}
		return "bad"
	},
	"spark": spark,
	"hist":  hist,
}

func asTime(v any) (time.Time, bool) {
	switch t := v.(type) {
	case time.Time:
		return t, !t.IsZero()
	case *time.Time:
		if t == nil || t.IsZero() {
			return time.Time{}, false
		}
		return *t, true
	}
	return time.Time{}, false
}

func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "–"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// fold shortens s to n characters.
func fold(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

func prettyJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

// spark draws counts as an SVG polyline (no script, no style attribute).
func spark(counts []uint32) template.HTML {
	const w, h = 140.0, 28.0
	var peak uint32 = 1
	for _, c := range counts {
		peak = max(peak, c)
	}
	var pts strings.Builder
	for i, c := range counts {
		x := float64(i) * w / float64(max(len(counts)-1, 1))
		y := h - 1 - float64(c)*(h-2)/float64(peak)
		fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
	}
	return template.HTML(fmt.Sprintf(`<svg class="spark" viewBox="0 0 140 28" role="img" aria-label="finished attempts per 10 s over the last hour, peak %d"><polyline points="%s"/></svg>`, peak, strings.TrimSpace(pts.String())))
}

// hist draws the beat lag histogram as SVG bars.
func hist(buckets []wire.LagBucket) template.HTML {
	if len(buckets) == 0 {
		return `<p class="muted">No fires yet.</p>`
	}
	const bw, h = 56, 140
	var peak int64 = 1
	for _, b := range buckets {
		peak = max(peak, b.Count)
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg class="hist" viewBox="0 0 %d %d" role="img" aria-label="fires by lag">`, bw*len(buckets), h+30)
	for i, b := range buckets {
		bar := float64(b.Count) * h / float64(peak)
		fmt.Fprintf(&s, `<rect x="%d" y="%.1f" width="%d" height="%.1f"><title>%d fires ≤ %s</title></rect>`, i*bw+4, h-bar, bw-8, bar, b.Count, html.EscapeString(lagLabel(b)))
		fmt.Fprintf(&s, `<text x="%d" y="%d">%s</text><text x="%d" y="%d">%d</text>`, i*bw+4, h+13, html.EscapeString(lagLabel(b)), i*bw+4, h+27, b.Count)
	}
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}

// lagLabel names a lag bucket by its bound.
func lagLabel(b wire.LagBucket) string {
	if b.LeMS == 0 {
		return "more"
	}
	if b.LeMS >= 1000 {
		return fmt.Sprintf("≤%gs", b.LeMS/1000)
	}
	return fmt.Sprintf("≤%gms", b.LeMS)
}

// pages are the templates of each page, each with the layout.
var pages = func() map[string]*template.Template {
	m := map[string]*template.Template{}
	for _, p := range []string{"overview", "queues", "tasks", "task", "schedules", "schedule_form", "dead", "workers", "beat"} {
		m[p] = template.Must(template.New(p).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html"))
	}
	m["login"] = template.Must(template.New("login").Funcs(funcs).ParseFS(templateFS, "templates/login.html"))
	return m
}()
