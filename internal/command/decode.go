package command

import (
	"bytes"
	"encoding/json"
	"fmt"
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
		OnChange stringList `json:"onChange"`
		OnFail   stringList `json:"onFail"`
		OnRemove stringList `json:"onRemove"`
	}{plain: (*plain)(c)}
	if err := json.Unmarshal(b, &aux); err != nil {
		if c.ID != "" {
			return fmt.Errorf("command %q: %w", c.ID, err)
		}
		return fmt.Errorf("command: %w", err)
	}
	c.OnChange, c.OnFail, c.OnRemove = aux.OnChange, aux.OnFail, aux.OnRemove
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
