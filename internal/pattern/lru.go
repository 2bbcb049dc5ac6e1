package pattern

import "container/list"

// lru is a map bounded in entries and in bytes (each entry's size as given
// to add) that evicts the least recently used entries. It is not safe for
// concurrent use: its owner holds a lock.
type lru[K comparable, V any] struct {
	max, maxBytes int
	bytes         int
	order         list.List // of *lruItem[K, V], most recently used first
	items         map[K]*list.Element
}

type lruItem[K comparable, V any] struct {
	key  K
	size int
	val  V
}

func newLRU[K comparable, V any](max, maxBytes int) *lru[K, V] {
	return &lru[K, V]{max: max, maxBytes: maxBytes, items: map[K]*list.Element{}}
}

// get returns the value of k and marks it most recently used.
func (c *lru[K, V]) get(k K) (V, bool) {
	el, ok := c.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruItem[K, V]).val, true
}

// peek returns the value of k without marking it used.
func (c *lru[K, V]) peek(k K) (V, bool) {
	el, ok := c.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	return el.Value.(*lruItem[K, V]).val, true
}

// add stores v under k, unless k is present, and returns the value now
// stored; then it evicts down to the limits (possibly v itself, if size
// alone is over maxBytes).
func (c *lru[K, V]) add(k K, size int, v V) V {
	if el, ok := c.items[k]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*lruItem[K, V]).val
	}
	c.items[k] = c.order.PushFront(&lruItem[K, V]{key: k, size: size, val: v})
	c.bytes += size
	for c.order.Len() > c.max || c.bytes > c.maxBytes {
		old := c.order.Remove(c.order.Back()).(*lruItem[K, V])
		delete(c.items, old.key)
		c.bytes -= old.size
	}
	return v
}

// len returns the number of entries.
func (c *lru[K, V]) len() int { return c.order.Len() }
