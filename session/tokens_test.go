package session

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const iss = "https://app.example.com"

func newIssuer(t testing.TB, alg string) (*Issuer, *time.Time) {
	t.Helper()
	cfg := TokenConfig{}
	cfg.SetDefaults()
	is := NewIssuer(NewMemory(0), testKeys(t, alg), iss, cfg)
	now := time.Now()
	is.Now = func() time.Time { return now }
	return is, &now
}

// testKeys is a fresh key set of one alg key.
func testKeys(t testing.TB, alg string) *KeySet {
	t.Helper()
	pemKey, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := ParseKeys(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// issuerOn is an ES256 issuer on s; a zero cfg is the defaults.
func issuerOn(t testing.TB, s Store, cfg TokenConfig) *Issuer {
	t.Helper()
	if cfg == (TokenConfig{}) {
		cfg.SetDefaults()
	}
	return NewIssuer(s, testKeys(t, ES256), iss, cfg)
}

func TestKeyAlgorithms(t *testing.T) {
	for _, alg := range []string{ES256, RS256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			is, _ := newIssuer(t, alg)
			var set struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(is.Keys().JWKS(), &set); err != nil {
				t.Fatal(err)
			}
			if len(set.Keys) != 1 || set.Keys[0]["alg"] != alg || set.Keys[0]["kid"] == "" || set.Keys[0]["d"] != nil {
				t.Errorf("JWKS = %v; want one public key with alg %s and kid", set.Keys, alg)
			}
			p, err := is.Login(context.Background(), Identity{OpenID: "o1", Scope: "miniprogram"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := is.Authenticate(context.Background(), p.AccessToken); err != nil {
				t.Errorf("Authenticate(own token) = %v", err)
			}
		})
	}
	if _, err := GenerateKey("HS256"); err == nil {
		t.Error("GenerateKey(HS256) succeeded")
	}
}

func TestLoadKeysGeneratesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "signing.pem")
	ks1, created, err := LoadKeys(path, OriginServe)
	if err != nil || !created {
		t.Fatalf("first LoadKeys: created=%v err=%v", created, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	ks2, created, err := LoadKeys(path, OriginServe)
	if err != nil || created || string(ks1.JWKS()) != string(ks2.JWKS()) {
		t.Errorf("second LoadKeys: created=%v err=%v same=%v", created, err, string(ks1.JWKS()) == string(ks2.JWKS()))
	}
}

// TestRotationInThreeSteps: a token signed by the old key verifies while
// both keys are in the file, whichever signs.
func TestRotationInThreeSteps(t *testing.T) {
	oldPEM, _ := GenerateKey(ES256)
	newPEM, _ := GenerateKey(EdDSA)
	cfg := TokenConfig{}
	cfg.SetDefaults()
	store := NewMemory(0)
	old, _ := ParseKeys(oldPEM)
	p, err := NewIssuer(store, old, iss, cfg).Login(context.Background(), Identity{OpenID: "o"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	step1, _ := ParseKeys(append(append([]byte{}, oldPEM...), newPEM...))
	step2, _ := ParseKeys(append(append([]byte{}, newPEM...), oldPEM...))
	step3, _ := ParseKeys(newPEM)
	for name, ks := range map[string]*KeySet{"step 1": step1, "step 2": step2} {
		if _, err := NewIssuer(store, ks, iss, cfg).Authenticate(context.Background(), p.AccessToken); err != nil {
			t.Errorf("%s: old token: %v", name, err)
		}
	}
	if step2.Algorithm() != EdDSA {
		t.Errorf("step 2 signs with %s, want the new key", step2.Algorithm())
	}
	if _, err := NewIssuer(store, step3, iss, cfg).Authenticate(context.Background(), p.AccessToken); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("step 3: old token: %v, want ErrInvalidToken", err)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func jsonB64(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64(b)
}

func TestVerifyRefuses(t *testing.T) {
	is, now := newIssuer(t, ES256)
	ctx := context.Background()
	good, err := is.Login(ctx, Identity{OpenID: "o1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good.AccessToken, ".")
	var hdr map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[0])
	_ = json.Unmarshal(raw, &hdr)
	var claims map[string]any
	raw, _ = base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(raw, &claims)

	// HS256 keyed by the public key: the classic algorithm-confusion attack,
	// with each public encoding an attacker might try.
	pub, _ := is.Keys().public.Key(0)
	var rawPub any
	_ = pub.Raw(&rawPub)
	der, _ := x509.MarshalPKIXPublicKey(rawPub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwkJSON, _ := json.Marshal(pub)
	hs := func(key []byte) string {
		h := map[string]any{"alg": "HS256", "typ": "JWT", "kid": hdr["kid"]}
		signing := jsonB64(t, h) + "." + parts[1]
		m := hmac.New(sha256.New, key)
		m.Write([]byte(signing))
		return signing + "." + b64(m.Sum(nil))
	}
	with := func(change func(map[string]any)) string {
		c := map[string]any{}
		for k, v := range claims {
			c[k] = v
		}
		change(c)
		// Re-signed with the real key, so only the claim is wrong.
		tok, err := jwtFromMap(is, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	other, _ := newIssuer(t, ES256)
	foreign, _ := other.Login(ctx, Identity{OpenID: "o1"}, nil)

	tests := []struct {
		name, token string
		want        error
	}{
		{"alg none", jsonB64(t, map[string]any{"alg": "none", "kid": hdr["kid"]}) + "." + parts[1] + ".", ErrInvalidToken},
		{"alg none no kid", jsonB64(t, map[string]any{"alg": "none"}) + "." + parts[1] + ".", ErrInvalidToken},
		{"HS256 with PEM public key", hs(pubPEM), ErrInvalidToken},
		{"HS256 with DER public key", hs(der), ErrInvalidToken},
		{"HS256 with JWK public key", hs(jwkJSON), ErrInvalidToken},
		{"wrong aud", with(func(c map[string]any) { c["aud"] = "someone-else" }), ErrInvalidToken},
		{"wrong iss", with(func(c map[string]any) { c["iss"] = "https://evil.example" }), ErrInvalidToken},
		{"unknown key", foreign.AccessToken, ErrInvalidToken},
		{"tampered claims", parts[0] + "." + jsonB64(t, map[string]any{"sub": "admin"}) + "." + parts[2], ErrInvalidToken},
		{"garbage", "not.a.jwt", ErrInvalidToken},
		{"empty", "", ErrInvalidToken},
	}
	for _, tc := range tests {
		if _, err := is.Authenticate(ctx, tc.token); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	*now = now.Add(2*time.Hour + time.Minute)
	if _, err := is.Authenticate(ctx, good.AccessToken); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("expired: err = %v, want ErrTokenExpired", err)
	}
}

// jwtFromMap signs arbitrary claims with the issuer's key.
func jwtFromMap(is *Issuer, c map[string]any) (string, error) {
	signer := is.keys.signer
	kid := signer.KeyID()
	h := map[string]any{"alg": is.keys.alg.String(), "kid": kid, "typ": "JWT"}
	hb, _ := json.Marshal(h)
	cb, _ := json.Marshal(c)
	signing := b64(hb) + "." + b64(cb)
	var raw any
	if err := signer.Raw(&raw); err != nil {
		return "", err
	}
	sig, err := signES256(raw, []byte(signing))
	return signing + "." + b64(sig), err
}

func TestRefreshRotationAndReuse(t *testing.T) {
	is, now := newIssuer(t, ES256)
	ctx := context.Background()
	p1, _ := is.Login(ctx, Identity{OpenID: "o1", UnionID: "u1", Scope: "miniprogram"}, nil)
	p2, err := is.Refresh(ctx, p1.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if p2.RefreshToken == p1.RefreshToken || p2.AccessToken == p1.AccessToken || p2.UnionID != "u1" {
		t.Fatalf("refresh returned %+v", p2)
	}
	// Within the grace, the old token is refused but nothing is revoked.
	if _, err := is.Refresh(ctx, p1.RefreshToken); !errors.Is(err, ErrInvalidGrant) {
		t.Errorf("immediate reuse: %v, want ErrInvalidGrant", err)
	}
	if _, err := is.Authenticate(ctx, p2.AccessToken); err != nil {
		t.Fatalf("a race within the grace revoked the family: %v", err)
	}
	// Later reuse revokes the family: every token of it stops working.
	*now = now.Add(time.Minute)
	if _, err := is.Refresh(ctx, p1.RefreshToken); !errors.Is(err, ErrInvalidGrant) {
		t.Errorf("reuse: %v, want ErrInvalidGrant", err)
	}
	if _, err := is.Refresh(ctx, p2.RefreshToken); !errors.Is(err, ErrInvalidGrant) {
		t.Errorf("current token after reuse: %v, want ErrInvalidGrant", err)
	}
	for _, a := range []string{p1.AccessToken, p2.AccessToken} {
		if _, err := is.Authenticate(ctx, a); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("access token after reuse: %v, want ErrInvalidToken", err)
		}
	}
	// Another family is untouched.
	p3, _ := is.Login(ctx, Identity{OpenID: "o2"}, nil)
	if _, err := is.Authenticate(ctx, p3.AccessToken); err != nil {
		t.Errorf("other family: %v", err)
	}
	if err := is.Revoke(ctx, p3.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if _, err := is.Authenticate(ctx, p3.AccessToken); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("after revoke: %v", err)
	}
	if err := is.Revoke(ctx, "unknown-token"); err != nil {
		t.Errorf("Revoke(unknown) = %v, want nil", err)
	}
	// Refresh tokens expire.
	p4, _ := is.Login(ctx, Identity{OpenID: "o4"}, nil)
	*now = now.Add(721 * time.Hour)
	if _, err := is.Refresh(ctx, p4.RefreshToken); !errors.Is(err, ErrInvalidGrant) {
		t.Errorf("expired refresh token: %v", err)
	}
}

func TestConcurrentRefreshOneWinner(t *testing.T) {
	is, _ := newIssuer(t, ES256)
	ctx := context.Background()
	p, _ := is.Login(ctx, Identity{OpenID: "o1"}, nil)
	won := raceRefresh(t, is, p.RefreshToken, 50)
	if _, err := is.Refresh(ctx, won.RefreshToken); err != nil {
		t.Errorf("the winner's refresh token: %v", err)
	}
}

func TestAssertionCached(t *testing.T) {
	is, now := newIssuer(t, ES256)
	id := &Identity{OpenID: "o1", UnionID: "u1", AppID: "wx1", Scope: "snsapi_base"}
	a1, _ := is.Assertion("h1", id, "app")
	a2, _ := is.Assertion("h1", id, "app")
	if a1 != a2 {
		t.Error("assertion re-signed on every call")
	}
	if b, _ := is.Assertion("h1", id, "billing"); b == a1 {
		t.Error("one assertion for two audiences")
	}
	if _, err := is.keys.Verify(a1, iss, "app", is.Now); err != nil {
		t.Errorf("assertion does not verify: %v", err)
	}
	*now = now.Add(AssertionTTL - assertionRenew + time.Second)
	if a3, _ := is.Assertion("h1", id, "app"); a3 == a1 {
		t.Error("assertion near expiry was not re-signed")
	}
}

// raceRefresh presents one refresh token n times at once and returns the
// one pair issued; it fails the test unless exactly one refresh won and
// the others got ErrInvalidGrant.
func raceRefresh(t *testing.T, is *Issuer, token string, n int) *Pair {
	t.Helper()
	var wins atomic.Int32
	var winner atomic.Pointer[Pair]
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			np, err := is.Refresh(context.Background(), token)
			switch {
			case err == nil:
				wins.Add(1)
				winner.Store(np)
			case !errors.Is(err, ErrInvalidGrant):
				t.Errorf("loser err = %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d of %d concurrent refreshes succeeded, want 1", wins.Load(), n)
	}
	return winner.Load()
}
