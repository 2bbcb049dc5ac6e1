package source

import (
	"context"
	"encoding/base64"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// WebhookRequest is one HTTP request for webhookPaths (spec §4.7, env
// §2.7).
type WebhookRequest struct {
	Method     string
	Path       string
	RawQuery   string // without "?"
	Header     http.Header
	Body       []byte // already limited to 4 MiB by the listener
	RemoteAddr string
}

// WebhookReply is what a webhook request got.
type WebhookReply struct {
	Found       bool // some source produced a webhookBody; false → caller answers 404
	Body        string
	ContentType string // "" → caller uses text/plain
	Source      string // the source that answered
}

// Webhook runs the sources whose WebhookPaths contain r.Path, in name
// order, each through its run queue (Origin{Trigger: TriggerWebhook,
// Where: r.RemoteAddr}, ETCHA_WEBHOOK_* env; no diff; triggerOnly does not
// block), stopping at the first that emits webhookBody: its first
// webhookBody and first webhookContentType make the reply. A source with
// no current pattern, or whose run emits no body (failed or not), passes
// the request on. When ctx ends first, it returns ctx.Err() (the running
// commands' process groups are killed) — the caller answers 504 on
// context.DeadlineExceeded. Other errors are ErrClosed.
func (e *Engine) Webhook(ctx context.Context, r WebhookRequest) (WebhookReply, error) {
	o := Origin{Trigger: TriggerWebhook, Where: r.RemoteAddr, Env: r.env()}
	for _, name := range e.webhookSources(r.Path) {
		res, err := e.Run(ctx, name, o)
		if ctx.Err() != nil {
			return WebhookReply{}, ctx.Err()
		}
		if err != nil {
			return WebhookReply{}, err
		}
		reply := WebhookReply{Source: name}
		for _, ev := range res.Events {
			switch {
			case ev.Name == "webhookBody" && !reply.Found:
				reply.Found, reply.Body = true, ev.Output
			case ev.Name == "webhookContentType" && reply.ContentType == "":
				reply.ContentType = ev.Output
			}
		}
		if reply.Found {
			return reply, nil
		}
	}
	return WebhookReply{}, nil
}

// WebhookPaths lists every path some source serves, sorted, without
// duplicates.
func (e *Engine) WebhookPaths() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, s := range e.sources {
		out = append(out, s.cfg.WebhookPaths...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// webhookSources returns, in name order, the sources that serve path.
func (e *Engine) webhookSources(path string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, n := range e.names {
		if slices.Contains(e.sources[n].cfg.WebhookPaths, path) {
			out = append(out, n)
		}
	}
	return out
}

// env is the ETCHA_WEBHOOK_* environment of the request (spec §2.7): the
// body in padded standard base64, the headers as "Name: value" lines
// (canonical names, sorted; a line per value) joined by "\n".
func (r WebhookRequest) env() map[string]string {
	canon := map[string][]string{}
	for _, k := range slices.Sorted(maps.Keys(r.Header)) { // sorted: "a" and "A" merge the same way each time
		ck := http.CanonicalHeaderKey(k)
		canon[ck] = append(canon[ck], r.Header[k]...)
	}
	names := make([]string, 0, len(canon))
	for k := range canon {
		names = append(names, k)
	}
	slices.Sort(names)
	var lines []string
	for _, k := range names {
		for _, v := range canon[k] {
			lines = append(lines, k+": "+v)
		}
	}
	return map[string]string{
		"ETCHA_WEBHOOK_BODY":    base64.StdEncoding.EncodeToString(r.Body),
		"ETCHA_WEBHOOK_HEADERS": strings.Join(lines, "\n"),
		"ETCHA_WEBHOOK_METHOD":  r.Method,
		"ETCHA_WEBHOOK_PATH":    r.Path,
		"ETCHA_WEBHOOK_QUERY":   r.RawQuery,
	}
}
