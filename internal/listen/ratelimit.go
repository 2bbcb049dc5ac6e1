package listen

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxClients bounds the number of client IPs whose limiters are kept.
const maxClients = 4096

// Rate is a parsed httpServer.rateLimitRate: Count requests per Per, with
// bursts of up to Count. The zero Rate means no limit.
type Rate struct {
	Count int
	Per   time.Duration
}

// ParseRate parses "<count>/<period>": count a positive integer, period
// "s", "m", "h" or a Go duration ("10s", "1m30s"). "" and "0" mean no limit
// (the zero Rate).
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return Rate{}, nil
	}
	bad := fmt.Errorf("httpServer.rateLimitRate %q: want <count>/<period>, for example \"10/s\" or \"600/m\", or \"\" for no limit", s)
	count, period, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, bad
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 {
		return Rate{}, bad
	}
	if n == 0 {
		return Rate{}, nil
	}
	var per time.Duration
	switch period {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		if per, err = time.ParseDuration(period); err != nil || per <= 0 {
			return Rate{}, bad
		}
	}
	return Rate{Count: n, Per: per}, nil
}

// limiter is a token bucket per client key, for at most max keys.
type limiter struct {
	rate  rate.Limit
	burst int
	// idle is how long a bucket takes to fill up again: a key unseen for
	// that long is the same as a new key, so forgetting it loses nothing.
	idle time.Duration
	max  int

	mu      sync.Mutex
	clients map[string]*client
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(r Rate, max int) *limiter {
	return &limiter{
		rate:    rate.Limit(float64(r.Count) / r.Per.Seconds()),
		burst:   r.Count,
		idle:    r.Per,
		max:     max,
		clients: make(map[string]*client),
	}
}

// allow takes one token from key's bucket at now, and reports whether
// there was one.
func (l *limiter) allow(key string, now time.Time) bool {
	ok, _ := l.take(key, now)
	return ok
}

// take takes one token from key's bucket at now. When there is none it
// takes nothing and returns how long until one will be there (the
// reservation's delay), for Retry-After.
func (l *limiter) take(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.clients[key]
	if c == nil {
		if len(l.clients) >= l.max {
			l.evict(now)
		}
		c = &client{lim: rate.NewLimiter(l.rate, l.burst)}
		l.clients[key] = c
	}
	c.seen = now
	r := c.lim.ReserveN(now, 1)
	if !r.OK() { // only with a burst of 0, which ParseRate never gives
		return false, l.idle
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// retryAfter is the Retry-After value for a wait of d: whole seconds,
// rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}

// evict makes room for one key: it forgets every key whose bucket is full
// again, and if that frees nothing, the least recently seen key.
func (l *limiter) evict(now time.Time) {
	var oldest string
	for k, c := range l.clients {
		if now.Sub(c.seen) >= l.idle {
			delete(l.clients, k)
			continue
		}
		if oldest == "" || c.seen.Before(l.clients[oldest].seen) {
			oldest = k
		}
	}
	if len(l.clients) >= l.max {
		delete(l.clients, oldest)
	}
}
