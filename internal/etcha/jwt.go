package etcha

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/dispenser-dev/dispenser/internal/token"
)

// JWT prints the claims of the JWT at path as JSON, then verifies it
// against run.verifyKeys and run.jwtRule (spec §1.2). The claims are
// printed even when verification fails; the returned error then says why
// (exit 1). A JWT that cannot be decoded prints nothing.
func (a *App) JWT(ctx context.Context, path string) error {
	text, err := a.readJWT(ctx, path)
	if err != nil {
		return err
	}
	claims, err := token.Parse(text, a.maxJWTSize())
	if err != nil {
		return fmt.Errorf("jwt %s: %w", path, err)
	}
	m, err := claims.Map()
	if err != nil {
		return fmt.Errorf("jwt %s: %w", path, err)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false) // scripts are full of > and &
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return fmt.Errorf("jwt %s: %w", path, err)
	}
	if _, err := a.stdout().Write(out.Bytes()); err != nil {
		return err
	}
	if _, err := a.verify(text, nil); err != nil {
		return err
	}
	return nil
}

// Compare reports whether two JWTs (paths or URLs) are equal for pull
// purposes (spec §3.7): it prints "equal" and returns nil, or prints
// "different: <claims>" and returns an exit-1 *Error. A JWT that cannot be
// read or decoded is an exit-2 error. Signatures are not verified.
func (a *App) Compare(ctx context.Context, newPath, oldPath string, ignoreVersion bool) error {
	n, err := a.parseJWTFile(ctx, newPath)
	if err != nil {
		return &Error{Code: 2, Err: err}
	}
	o, err := a.parseJWTFile(ctx, oldPath)
	if err != nil {
		return &Error{Code: 2, Err: err}
	}
	if token.Equal(n, o, ignoreVersion) {
		fmt.Fprintln(a.stdout(), "equal")
		return nil
	}
	fmt.Fprintf(a.stdout(), "different: %s\n", strings.Join(differences(n, o, ignoreVersion), ", "))
	return exitSilently(1)
}

func (a *App) parseJWTFile(ctx context.Context, path string) (*token.Claims, error) {
	text, err := a.readJWT(ctx, path)
	if err != nil {
		return nil, err
	}
	c, err := token.Parse(text, a.maxJWTSize())
	if err != nil {
		return nil, fmt.Errorf("jwt %s: %w", path, err)
	}
	return c, nil
}

// differences names the compared claims that differ.
func differences(n, o *token.Claims, ignoreVersion bool) []string {
	var d []string
	if n.BuildManifest != o.BuildManifest {
		d = append(d, "etchaBuildManifest")
	}
	if n.Pattern.Entrypoint != o.Pattern.Entrypoint || (len(n.Pattern.Files)+len(o.Pattern.Files) > 0 && !reflect.DeepEqual(n.Pattern.Files, o.Pattern.Files)) {
		d = append(d, "etchaPattern")
	}
	if !ignoreVersion && n.Version != o.Version {
		d = append(d, "etchaVersion")
	}
	return d
}
