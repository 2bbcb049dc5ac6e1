package token

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// UnmarshalJSON decodes an etchaPattern claim; null is the empty Pattern.
// Keys match exactly; unknown keys are ignored. A key repeated in the object or in files is refused,
// since another decoder could pick the other copy and render a different
// pattern from the same signed bytes.
func (p *Pattern) UnmarshalJSON(b []byte) error {
	*p = Pattern{}
	if string(bytes.TrimSpace(b)) == "null" {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(b))
	return decodeObject(d, "etchaPattern", rebuild("etchaPattern"), func(key string) error {
		switch key {
		case "entrypoint":
			return d.Decode(&p.Entrypoint)
		case "files":
			files, err := decodeFiles(d)
			p.Files = files
			return err
		}
		var skip json.RawMessage
		return d.Decode(&skip)
	})
}

// decodeFiles decodes the files object (or null) of etchaPattern.
func decodeFiles(d *json.Decoder) (map[string]string, error) {
	if !d.More() {
		return nil, fmt.Errorf("files is missing a value")
	}
	var raw json.RawMessage
	if err := d.Decode(&raw); err != nil {
		return nil, err
	}
	if string(raw) == "null" {
		return nil, nil
	}
	fd := json.NewDecoder(bytes.NewReader(raw))
	files := map[string]string{}
	err := decodeObject(fd, "files", rebuild("files"), func(key string) error {
		var text string
		if err := fd.Decode(&text); err != nil {
			return fmt.Errorf("file %q: %w", clip(key), err)
		}
		files[key] = text
		return nil
	})
	return files, err
}

// decodeObject reads one JSON object from d, calling value for each key
// to decode its value; what names the object in errors. A key repeated
// (after JSON unescaping) returns dup(key): another decoder could pick the
// other copy and read different values from the same signed bytes.
func decodeObject(d *json.Decoder, what string, dup, value func(key string) error) error {
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("%s must be a JSON object", what)
	}
	seen := map[string]bool{}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		if seen[key] {
			return dup(key)
		}
		seen[key] = true
		if err := value(key); err != nil {
			return err
		}
	}
	_, err := d.Token() // the closing brace
	return err
}

// rebuild is the dup of decodeObject for the objects of etchaPattern.
func rebuild(what string) func(key string) error {
	return func(key string) error {
		return fmt.Errorf("%s has the key %q twice; build it again with etcha build", what, clip(key))
	}
}
