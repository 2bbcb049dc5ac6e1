package token

import (
	"errors"
	"fmt"
)

// Reason names why [Verify] or [CheckClaims] refused a token. The values are
// short lowercase words, stable enough to use as a metrics label.
type Reason string

// The reasons a token is refused.
const (
	ReasonTooLarge     Reason = "too_large"     // longer than VerifyOptions.MaxSize
	ReasonMalformed    Reason = "malformed"     // not three base64url JSON parts
	ReasonNoKeys       Reason = "no_keys"       // no verify keys configured
	ReasonSignature    Reason = "signature"     // no verify key accepts the signature
	ReasonExpired      Reason = "expired"       // now >= exp
	ReasonNotYetValid  Reason = "not_yet_valid" // now < nbf
	ReasonRule         Reason = "rule"          // jwtRule false or failing
	ReasonNoEntrypoint Reason = "no_entrypoint" // etchaPattern.entrypoint missing or not in files
)

// VerifyError is the error returned for every refused token. Error gives one
// line saying why and what to do; Err, when set, is the underlying cause.
type VerifyError struct {
	Reason Reason
	// Msg is the one-line explanation, including the hint.
	Msg string
	// Err is the underlying error, if any. It never holds key material.
	Err error
}

// Error returns Msg, which already ends with what to do about it.
func (e *VerifyError) Error() string { return e.Msg }

// Unwrap returns the underlying cause.
func (e *VerifyError) Unwrap() error { return e.Err }

// refuse builds a *VerifyError with a formatted message.
func refuse(r Reason, err error, format string, args ...any) *VerifyError {
	return &VerifyError{Reason: r, Msg: fmt.Sprintf(format, args...), Err: err}
}

// ReasonOf returns the Reason of the first *VerifyError in err's chain, or ""
// if there is none.
func ReasonOf(err error) Reason {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return ""
}

// ErrEncryptedKey is wrapped by the key parsers when given a PBKDF-encrypted
// (Rot format) private key, which this package cannot unlock.
var ErrEncryptedKey = errors.New("encrypted private keys are not supported; decrypt it first (for example with rot) and configure the plain key")
