package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/wxgate/wxgate/session"
)

// keygen writes a new signing key in PEM, its kid in a "Kid:" header: to
// stdout, or to --out (created 0600). Into a new file it is the key set;
// appended to one, it is step one of a rotation: the new key verifies but
// does not sign until it is moved first in the file. Either way it says
// what to do next.
func keygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("keygen", stderr)
	alg := fs.String("alg", session.ES256, "ES256, RS256 or EdDSA")
	out := fs.String("out", "", "append the key to this file (created if missing) instead of printing it")
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
	kids, err := session.KeyIDs(pemKey)
	if err != nil {
		fmt.Fprintln(stderr, "wxgate keygen:", err)
		return 1
	}
	before, err := appendKey(*out, pemKey)
	if err != nil {
		fmt.Fprintln(stderr, "wxgate keygen:", err)
		return 1
	}
	if before == 0 {
		fmt.Fprintf(stderr, `wrote a new %s key, kid %s, to %s.
Next: set [tokens] signing_key_file = %q and start wxgate (every replica needs this file); it signs at once.
`, *alg, kids[0], *out, *out)
		return 0
	}
	fmt.Fprintf(stderr, `appended a new %s key, kid %s, to %s (now %d keys; the first signs).
Next: 1. restart every replica with the file: the new key verifies everywhere;
      2. move the new key first in the file and restart again: it signs;
      3. once access_ttl has passed, remove the old key and restart.
`, *alg, kids[0], *out, before+1)
	return 0
}

// appendKey appends pemKey to the key set at path, creating it, and
// returns how many keys it held before (0 for a new or empty file). It
// refuses a file others may read, which would expose the new private key,
// and checks that the keys already there and the new one all parse
// together: a file whose last line has no newline would otherwise glue
// the new key's BEGIN line to it, and the gateway would refuse the file.
func appendKey(path string, pemKey []byte) (int, error) {
	existing, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	if err == nil {
		if err := private(path); err != nil {
			return 0, err
		}
	}
	n := 0
	if len(existing) > 0 {
		kids, err := session.KeyIDs(existing)
		if err != nil {
			return 0, fmt.Errorf("%s holds no valid key set: %w", path, err)
		}
		n = len(kids)
	}
	add := pemKey
	if len(existing) > 0 && existing[len(existing)-1] != '\n' {
		add = append([]byte("\n"), pemKey...)
	}
	if kids, err := session.KeyIDs(append(existing[:len(existing):len(existing)], add...)); err != nil || len(kids) != n+1 {
		return 0, fmt.Errorf("%s: the new key would not read back after its %d keys (%v); add it by hand", path, n, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	if _, err := f.Write(add); err != nil {
		f.Close()
		return 0, err
	}
	return n, f.Close()
}

// private fails for a file that anyone but its owner may read or write.
func private(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o, open to others; a private key goes in it: chmod 600 %s first", path, perm, path)
	}
	return nil
}
