package pattern

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// DNS record types used by the fake server.
const (
	typeA     = 1
	typeCNAME = 5
	typeTXT   = 16
	typeAAAA  = 28
)

// rr is one answer record.
type rr struct {
	typ  uint16
	data []byte
}

// fakeDNS answers DNS queries in memory over net.Pipe connections handed
// to a pure-Go net.Resolver: nothing touches the network.
type fakeDNS struct {
	records map[string][]rr // recordKey(type, "name.") → answers
	queries atomic.Int64
	wg      sync.WaitGroup
}

func (f *fakeDNS) resolver(t testing.TB) *net.Resolver {
	t.Cleanup(f.wg.Wait)
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		client, server := net.Pipe()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer server.Close()
			f.serve(server)
		}()
		return client, nil
	}}
}

// serve answers length-prefixed (stream) queries until the client closes.
func (f *fakeDNS) serve(c net.Conn) {
	for {
		var n uint16
		if binary.Read(c, binary.BigEndian, &n) != nil {
			return
		}
		q := make([]byte, n)
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		resp := f.answer(q)
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// answer builds the response to one query message.
func (f *fakeDNS) answer(q []byte) []byte {
	f.queries.Add(1)
	name, end := qname(q, 12)
	qtype := binary.BigEndian.Uint16(q[end:])
	question := q[12 : end+4]
	answers := f.records[recordKey(qtype, name)]
	flags := uint16(0x8180) // response, recursion desired and available
	if answers == nil {
		flags |= 3 // NXDOMAIN
	}
	msg := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(q)) // id
	for _, v := range []uint16{flags, 1, uint16(len(answers)), 0, 0} {
		msg = binary.BigEndian.AppendUint16(msg, v)
	}
	msg = append(msg, question...)
	for _, a := range answers {
		msg = append(msg, 0xc0, 12) // pointer to the question name
		for _, v := range []uint16{a.typ, 1, 0, 60, uint16(len(a.data))} {
			msg = binary.BigEndian.AppendUint16(msg, v)
		}
		msg = append(msg, a.data...)
	}
	return msg
}

func qname(msg []byte, off int) (string, int) {
	var labels []string
	for msg[off] != 0 {
		l := int(msg[off])
		labels = append(labels, string(msg[off+1:off+1+l]))
		off += 1 + l
	}
	return strings.ToLower(strings.Join(labels, ".")) + ".", off + 1
}

func recordKey(qtype uint16, name string) string {
	return fmt.Sprintf("%d %s", qtype, name)
}

func encodeName(name string) []byte {
	var out []byte
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		out = append(out, byte(len(l)))
		out = append(out, l...)
	}
	return append(out, 0)
}

func txt(s string) []byte { return append([]byte{byte(len(s))}, s...) }

func TestGetRecordFakeDNS(t *testing.T) {
	web := encodeName("web.example.test.")
	f := &fakeDNS{records: map[string][]rr{
		recordKey(typeTXT, "keys.example.test."):  {{typeTXT, txt("zeta")}, {typeTXT, txt("ed25519public:abc")}},
		recordKey(typeA, "web.example.test."):     {{typeA, []byte{10, 0, 0, 2}}, {typeA, []byte{10, 0, 0, 1}}},
		recordKey(typeAAAA, "web.example.test."):  {{typeAAAA, net.ParseIP("fd00::1").To16()}},
		recordKey(typeCNAME, "www.example.test."): {{typeCNAME, web}},
		recordKey(typeA, "www.example.test."):     {{typeCNAME, web}},
		recordKey(typeAAAA, "www.example.test."):  {{typeCNAME, web}},
	}}
	opts := Options{Resolver: f.resolver(t)}
	runNativeCases(t, []nativeCase{
		{name: "txt sorted", src: "std.native('getRecord')('TXT', 'keys.example.test', null, false)", opts: opts, want: `["ed25519public:abc","zeta"]`},
		{name: "a sorted", src: "std.native('getRecord')('a', 'web.example.test', null, false)", opts: opts, want: `["10.0.0.1","10.0.0.2"]`},
		{name: "aaaa", src: "std.native('getRecord')('AAAA', 'web.example.test', null, false)", opts: opts, want: `["fd00::1"]`},
		{name: "cname", src: "std.native('getRecord')('CNAME', 'www.example.test', null, false)", opts: opts, want: `["web.example.test."]`},
		{name: "nxdomain fallback", src: "std.native('getRecord')('TXT', 'none.example.test', ['fb'], false)", opts: opts, want: `["fb"]`},
		{name: "nxdomain", src: "std.native('getRecord')('TXT', 'none.example.test', null, false)", opts: opts, wantErr: "no such host"},
	})

	t.Run("memoised within a render", func(t *testing.T) {
		before := f.queries.Load()
		call := "std.native('getRecord')('TXT', 'keys.example.test', null, false)"
		got, err := eval(t, "["+call+", "+call+"]", opts)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := got, `[["ed25519public:abc","zeta"],["ed25519public:abc","zeta"]]`; got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
		if got := f.queries.Load() - before; got < 1 || got > 4 {
			// One TXT lookup; search-domain retries may add a few.
			t.Fatalf("queries = %d, want one lookup", got)
		}
		first := f.queries.Load() - before
		if _, err := eval(t, call, opts); err != nil {
			t.Fatal(err)
		}
		if got := f.queries.Load() - before; got != 2*first {
			t.Fatalf("queries after a second render = %d, want %d (memo is per render)", got, 2*first)
		}
	})
}
