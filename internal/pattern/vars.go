package pattern

// MergeVars merges vars layers from lowest to highest precedence (spec
// §5.3: etchaRunVars, top-level vars, source vars, target vars, automatic
// vars). Objects merge recursively; any other value in a higher layer
// replaces the lower one. Unlike std.mergePatch, a null never deletes: a
// null in a higher layer keeps the lower value, and is stored only when
// no lower value exists. The result shares no maps or slices with the
// inputs. Nil layers are skipped; the result is never nil.
func MergeVars(layers ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, l := range layers {
		mergeInto(out, l)
	}
	return out
}

func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		old, exists := dst[k]
		switch {
		case v == nil:
			if !exists {
				dst[k] = nil
			}
		case isObject(v) && isObject(old):
			mergeInto(old.(map[string]any), v.(map[string]any))
		case isObject(v):
			m := map[string]any{}
			mergeInto(m, v.(map[string]any))
			dst[k] = m
		default:
			dst[k] = deepCopy(v)
		}
	}
}

func isObject(v any) bool {
	_, ok := v.(map[string]any)
	return ok
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = deepCopy(x)
		}
		return s
	}
	return v
}
