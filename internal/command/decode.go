package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// UnmarshalJSON decodes a Command list with the tolerance rules of spec
// §2.2/§2.3: null elements are skipped and nested plain arrays are flattened,
// in order, into the list (flattening creates no scope). JSON null decodes to
// a nil list; [] and [null] decode to an empty, non-nil list, so a Command
// whose "commands" key holds such a list is still a (no-op) group.
func (c *Commands) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*c = nil
		return nil
	}
	out := Commands{}
	if err := flattenCommands(b, &out, 0); err != nil {
		return err
	}
	*c = out
	return nil
}

// maxNesting bounds the depth of nested plain arrays, so hostile input cannot
// exhaust the stack.
const maxNesting = 100

func flattenCommands(b []byte, out *Commands, depth int) error {
	if depth > maxNesting {
		return fmt.Errorf("command list nested deeper than %d arrays; flatten it", maxNesting)
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(b, &elems); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("command list must be an array of commands, got %s", jsonValue(te.Value))
		}
		return fmt.Errorf("command list must be an array of commands: %w", err)
	}
	for _, e := range elems {
		e = bytes.TrimSpace(e)
		switch {
		case isNull(e):
			continue
		case e[0] == '[':
			if err := flattenCommands(e, out, depth+1); err != nil {
				return err
			}
		case e[0] == '{':
			var cmd Command
			if err := json.Unmarshal(e, &cmd); err != nil {
				return err
			}
			*out = append(*out, &cmd)
		default:
			return fmt.Errorf("command list element %s is not a command object, array or null", truncate(e))
		}
	}
	return nil
}

// UnmarshalJSON decodes one Command. Besides the standard rules (null for a
// string field leaves it ""), onChange, onFail and onRemove accept a single
// string or a list whose null elements are skipped (spec §2.2).
func (c *Command) UnmarshalJSON(b []byte) error {
	type plain Command // no methods: avoids recursion
	aux := struct {
		*plain
		OnChange json.RawMessage `json:"onChange"`
		OnFail   json.RawMessage `json:"onFail"`
		OnRemove json.RawMessage `json:"onRemove"`
	}{plain: (*plain)(c)}
	err := json.Unmarshal(b, &aux)
	if err == nil {
		err = decodeTriggers(map[string]*[]string{"onChange": &c.OnChange, "onFail": &c.OnFail, "onRemove": &c.OnRemove},
			map[string]json.RawMessage{"onChange": aux.OnChange, "onFail": aux.OnFail, "onRemove": aux.OnRemove})
	}
	if err != nil {
		err = fieldError(err)
		if c.ID != "" {
			return fmt.Errorf("command %q: %w", c.ID, err)
		}
		return fmt.Errorf("command: %w", err)
	}
	return nil
}

// decodeTriggers decodes each raw trigger list into dst[name], in a fixed
// order so the reported error does not depend on map order.
func decodeTriggers(dst map[string]*[]string, raw map[string]json.RawMessage) error {
	for _, name := range []string{"onChange", "onFail", "onRemove"} {
		var l stringList
		if len(raw[name]) > 0 {
			if err := l.UnmarshalJSON(raw[name]); err != nil {
				return fmt.Errorf("%s must be a string or a list of strings", name)
			}
		}
		*dst[name] = l
	}
	return nil
}

// stringList is a list of strings that also accepts a single string and
// skips null elements.
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if isNull(b) {
		*s = nil
		return nil
	}
	if b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = stringList{one}
		return nil
	}
	var elems []*string
	if err := json.Unmarshal(b, &elems); err != nil {
		return fmt.Errorf("trigger list must be a string or a list of strings: %w", err)
	}
	out := make(stringList, 0, len(elems))
	for _, e := range elems {
		if e != nil {
			out = append(out, *e)
		}
	}
	*s = out
	return nil
}

// fieldError rewords encoding/json's type mismatch, whose message names
// Go internals ("Go struct field .plain.id of type string"), as
// "id must be a string"; other errors are returned unchanged.
func fieldError(err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field == "" {
		return err
	}
	field := strings.TrimPrefix(strings.ReplaceAll(te.Field, "plain.", ""), ".")
	return fmt.Errorf("%s must be %s, got %s", field, jsonKind(te.Type), jsonValue(te.Value))
}

// jsonKind names, with an article, the JSON type a Go type decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Map, reflect.Struct, reflect.Pointer:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean (true or false)"
	}
	return "a number"
}

// jsonValue names the JSON type encoding/json reports in
// UnmarshalTypeError.Value ("number", "string", "array", "object", "bool",
// or a number's text).
func jsonValue(v string) string {
	switch {
	case v == "array" || v == "object":
		return "an " + v
	case v == "string":
		return "a string"
	case v == "bool":
		return "a boolean"
	case strings.HasPrefix(v, "number"):
		return "a number"
	}
	return v
}

func isNull(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 0 || string(b) == "null"
}

func truncate(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
