package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/wxgate/wxgate/session"
)

// keygen writes a new signing key in PEM: to stdout, or appended to --out
// (created 0600). Appending is step one of a rotation: the new key verifies
// but does not sign until it is moved first in the file.
func keygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("keygen", stderr)
	alg := fs.String("alg", session.ES256, "ES256, RS256 or EdDSA")
	out := fs.String("out", "", "append the key to this file instead of printing it")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	pemKey, err := session.GenerateKey(*alg)
	if err != nil {
		fmt.Fprintln(stderr, "wxgate keygen:", err)
		return 2
	}
	if *out == "" {
		_, _ = stdout.Write(pemKey)
		return 0
	}
	if err := appendKey(*out, pemKey); err != nil {
		fmt.Fprintln(stderr, "wxgate keygen:", err)
		return 1
	}
	fmt.Fprintf(stderr, "appended a new %s key to %s; it verifies now and signs once moved first\n", *alg, *out)
	return 0
}

func appendKey(path string, pemKey []byte) error {
	existing, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(existing) > 0 {
		if _, err := session.ParseKeys(existing); err != nil {
			return fmt.Errorf("%s holds no valid key set: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(pemKey); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
