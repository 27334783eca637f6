package session

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Signing algorithms a key set accepts. ES256 is the default.
const (
	ES256 = "ES256"
	RS256 = "RS256"
	EdDSA = "EdDSA"
)

// KeySet signs and verifies wxgate's JWTs. The first key of its file signs;
// every key verifies, so a key rotates in three steps: add the new key last
// (it verifies), move it first (it signs), drop the old one once its
// tokens have expired.
type KeySet struct {
	signer jwk.Key
	alg    jwa.SignatureAlgorithm
	public jwk.Set
	jwks   []byte
	// origins are the keys' OriginHeader values, in file order ("" for
	// none, the usual case).
	origins []Origin
	// pseudonymKey is derived one way from the signing key's private
	// part: stable while that key signs, and unknowable from the JWKS.
	pseudonymKey []byte
	// kids are the keys' kids, in file order.
	kids []string
}

// ErrInvalidToken and ErrTokenExpired classify verification failures.
var (
	ErrInvalidToken = errors.New("session: invalid token")
	ErrTokenExpired = errors.New("session: token expired")
)

// LoadKeys reads a PEM key set from path for a gateway started as as. If
// the file does not exist it generates an ES256 key into it (mode 0600)
// and reports created = true; a key generated as OriginDev carries the
// PEM header "Wxgate-Origin: dev". As OriginServe it refuses, with an
// *OriginError, a file holding any key so marked: dev's tokens are minted
// for simulated logins (issue 8).
func LoadKeys(path string, as Origin) (ks *KeySet, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var headers map[string]string
		if as == OriginDev {
			headers = map[string]string{OriginHeader: string(OriginDev)}
		}
		b, err = generateKey(ES256, headers)
		if err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, fmt.Errorf("creating signing key directory: %w", err)
		}
		// O_EXCL: two processes starting together must not both write.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return LoadKeys(path, as)
		}
		if err != nil {
			return nil, false, fmt.Errorf("writing signing key: %w", err)
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("writing signing key: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, false, fmt.Errorf("writing signing key: %w", err)
		}
		created = true
	} else if err != nil {
		return nil, false, fmt.Errorf("reading signing keys: %w", err)
	}
	if ks, err = ParseKeys(b); err != nil {
		return nil, false, err
	}
	if err := ks.suits(path, as); err != nil {
		return nil, false, err
	}
	return ks, created, nil
}

// suits refuses, for any gateway but dev's, a key set holding a key that
// wxgate dev generated.
func (ks *KeySet) suits(path string, as Origin) error {
	if as == OriginDev {
		return nil
	}
	for i, o := range ks.origins {
		if o == OriginDev {
			return &OriginError{Path: path, Item: fmt.Sprintf("signing key %d", i+1), Origin: o}
		}
	}
	return nil
}

// CheckKeys reports what LoadKeys would refuse in the signing keys at
// path, for a gateway started as as, and changes nothing: a missing file
// is no problem (LoadKeys creates it).
func CheckKeys(path string, as Origin) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading signing keys: %w", err)
	}
	ks, err := ParseKeys(b)
	if err != nil {
		return err
	}
	return ks.suits(path, as)
}

// GenerateKey returns a new private key in PEM (PKCS#8) for alg: ES256
// (P-256), RS256 (3072-bit RSA) or EdDSA (Ed25519).
func GenerateKey(alg string) ([]byte, error) { return generateKey(alg, nil) }

// generateKey is GenerateKey with PEM headers.
func generateKey(alg string, headers map[string]string) ([]byte, error) {
	var key crypto.Signer
	var err error
	switch alg {
	case ES256, "":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	case EdDSA:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("unknown algorithm %q (ES256, RS256 or EdDSA)", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	kid, err := keyID(key)
	if err != nil {
		return nil, err
	}
	h := map[string]string{KeyIDHeader: kid}
	for k, v := range headers {
		h[k] = v
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: h, Bytes: der}), nil
}

// KeyIDHeader is the PEM header that shows a signing key's kid ("Kid:
// ..."), the one its tokens and the JWKS name it by, so that an operator
// can tell the keys of a file apart and match them with tokens. It is the
// key's RFC 7638 thumbprint, which ParseKeys computes for a key without
// the header and checks against the header when there is one.
const KeyIDHeader = "Kid"

// keyID is the kid of a private key: the base64url SHA-256 JWK thumbprint
// of its public key (RFC 7638).
func keyID(raw any) (string, error) {
	priv, _, err := jwkOf(raw)
	if err != nil {
		return "", err
	}
	pub, err := priv.PublicKey()
	if err != nil {
		return "", err
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// KeyIDs lists the kids of the PEM keys in b, in order, as ParseKeys
// names them.
func KeyIDs(b []byte) ([]string, error) {
	ks, err := ParseKeys(b)
	if err != nil {
		return nil, err
	}
	return ks.kids, nil
}

// ParseKeys reads one or more PEM private keys; the first signs. A key's
// OriginHeader, if any, must be "dev" or "serve"; its KeyIDHeader, if
// any, its kid; other headers are ignored.
func ParseKeys(b []byte) (*KeySet, error) {
	ks := &KeySet{public: jwk.NewSet()}
	for i := 0; ; i++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		raw, err := parsePrivate(block)
		if err != nil {
			return nil, fmt.Errorf("signing key %d: %w", i+1, err)
		}
		origin := Origin(block.Headers[OriginHeader])
		if origin != "" && origin != OriginDev && origin != OriginServe {
			return nil, fmt.Errorf("signing key %d: unknown %s %q (dev or serve)", i+1, OriginHeader, origin)
		}
		priv, alg, err := jwkOf(raw)
		if err != nil {
			return nil, fmt.Errorf("signing key %d: %w", i+1, err)
		}
		pub, err := priv.PublicKey()
		if err != nil {
			return nil, err
		}
		tp, err := pub.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, err
		}
		kid := base64.RawURLEncoding.EncodeToString(tp)
		if h, ok := block.Headers[KeyIDHeader]; ok && h != kid {
			// An edited header, or one copied from another key: the
			// tokens would name a key the file does not show.
			return nil, fmt.Errorf("signing key %d: %s header %q is not the key's kid %s (its RFC 7638 thumbprint)", i+1, KeyIDHeader, h, kid)
		}
		for _, k := range []jwk.Key{priv, pub} {
			_ = k.Set(jwk.KeyIDKey, kid)
			_ = k.Set(jwk.AlgorithmKey, alg)
			_ = k.Set(jwk.KeyUsageKey, jwk.ForSignature)
		}
		if _, dup := ks.public.LookupKeyID(kid); dup {
			return nil, fmt.Errorf("signing key %d: duplicate of an earlier key", i+1)
		}
		if err := ks.public.AddKey(pub); err != nil {
			return nil, err
		}
		ks.origins = append(ks.origins, origin)
		ks.kids = append(ks.kids, kid)
		if ks.signer == nil {
			ks.signer, ks.alg = priv, alg
			sum := sha256.Sum256(append([]byte("wxgate log pseudonyms v1\x00"), block.Bytes...))
			ks.pseudonymKey = sum[:]
		}
	}
	if ks.signer == nil {
		return nil, errors.New("no PEM private key found")
	}
	var err error
	ks.jwks, err = json.Marshal(ks.public)
	if err != nil {
		return nil, err
	}
	return ks, nil
}

func parsePrivate(block *pem.Block) (any, error) {
	switch block.Type {
	case "PRIVATE KEY":
		return x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
}

// jwkOf wraps a private key and picks its algorithm: the key type fixes
// it, and verification is pinned to it.
func jwkOf(raw any) (jwk.Key, jwa.SignatureAlgorithm, error) {
	var alg jwa.SignatureAlgorithm
	switch k := raw.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, "", errors.New("ECDSA keys must use P-256 (ES256)")
		}
		alg = jwa.ES256
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, "", errors.New("RSA keys must have at least 2048 bits")
		}
		alg = jwa.RS256
	case ed25519.PrivateKey:
		alg = jwa.EdDSA
	default:
		return nil, "", fmt.Errorf("unsupported key type %T", raw)
	}
	key, err := jwk.FromRaw(raw)
	return key, alg, err
}

// JWKS returns the public keys as a JWK Set document.
func (ks *KeySet) JWKS() []byte { return ks.jwks }

// PseudonymKey is a key for the HMAC that turns user IDs into log
// pseudonyms: derived one way from the signing key, so it is the same on
// every replica and across restarts, and changes when another key signs.
// Callers must not modify it.
func (ks *KeySet) PseudonymKey() []byte { return ks.pseudonymKey }

// Algorithm is the signing key's algorithm.
func (ks *KeySet) Algorithm() string { return ks.alg.String() }

// IDs lists the keys' kids, in file order: the first signs.
func (ks *KeySet) IDs() []string { return slices.Clone(ks.kids) }

// Sign signs a token with the first key.
func (ks *KeySet) Sign(t jwt.Token) (string, error) {
	b, err := jwt.Sign(t, jwt.WithKey(ks.alg, ks.signer))
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return string(b), nil
}

// leeway is the clock skew allowed on exp, nbf and iat.
const leeway = 30 * time.Second

// Verify checks a token's signature with the key its kid names, pinned to
// that key's algorithm (so "none" and HMAC-with-the-public-key fail), and
// its iss, aud, exp and nbf. now is the clock. Failures are ErrTokenExpired
// or ErrInvalidToken, wrapping the detail.
func (ks *KeySet) Verify(token, issuer, audience string, now func() time.Time) (jwt.Token, error) {
	t, err := jwt.ParseString(token,
		jwt.WithKeySet(ks.public),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithAcceptableSkew(leeway),
		jwt.WithClock(jwt.ClockFunc(now)),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
		jwt.WithRequiredClaim(jwt.JwtIDKey),
	)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired()) {
			return nil, fmt.Errorf("%w: %w", ErrTokenExpired, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return t, nil
}
