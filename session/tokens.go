package session

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/patrickmn/go-cache"

	"github.com/wxgate/wxgate/internal/secret"
)

// ErrInvalidGrant is a refresh token that is unknown, expired, revoked or
// already used.
var ErrInvalidGrant = errors.New("session: invalid grant")

// ErrRefreshReused joins ErrInvalidGrant when the refresh token was a
// rotated-out one presented past the reuse grace: its family was revoked.
var ErrRefreshReused = errors.New("refresh token reused")

// Family is one API login: every refresh token rotated from it shares it,
// and revoking it ends them all and their access tokens.
type Family struct {
	ID       string   `json:"id"`
	Identity Identity `json:"identity"`
	Tokens   *Tokens  `json:"tokens,omitempty"` // the user's WeChat tokens (app login)
	Current  string   `json:"current"`          // Hash of the live refresh token
	// Revoked marked revoked families before revocation deleted them; a
	// stored family that still carries it is honoured.
	Revoked bool      `json:"revoked,omitempty"`
	Created time.Time `json:"created"`
	Rotated time.Time `json:"rotated"`
}

// Pair is the token pair answer (DESIGN.md "API clients").
type Pair struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int    `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	RefreshExpiresIn int    `json:"refresh_expires_in"`
	OpenID           string `json:"openid"`
	UnionID          string `json:"unionid,omitempty"`
}

// Issuer issues and checks API tokens and identity assertions.
type Issuer struct {
	store    Store
	keys     *KeySet
	issuer   string
	cfg      TokenConfig
	assert   *cache.Cache // signed identity assertions by session and audience
	assertTT time.Duration
	// verified remembers access tokens whose signature and claims checked
	// out, by the exact token string, until their exp: verifying ES256 on
	// every request would dominate the bearer hot path. The family is still
	// read on every request, so revocation takes effect at once.
	verified *cache.Cache
	// MaxLoginsPerUser bounds a person's logins, as the Manager's does:
	// set it from [session] max_logins_per_user. Default (NewIssuer):
	// DefaultMaxLoginsPerUser.
	MaxLoginsPerUser int
	// OnCapped, if set, hears of each login a new family ended for
	// MaxLoginsPerUser, as the Manager's does.
	OnCapped func(kind string)
	// Now is the clock; tests replace it. Default: time.Now.
	Now func() time.Time
}

// NewIssuer returns an Issuer whose tokens carry iss = issuer (the public
// URL). cfg must have its defaults set.
func NewIssuer(store Store, keys *KeySet, issuer string, cfg TokenConfig) *Issuer {
	return &Issuer{
		store: store, keys: keys, issuer: issuer, cfg: cfg,
		assert:   cache.New(AssertionTTL, time.Minute),
		verified: cache.New(time.Minute, time.Minute),
		assertTT: AssertionTTL,
		Now:      time.Now,

		MaxLoginsPerUser: DefaultMaxLoginsPerUser,
	}
}

// Keys returns the issuer's key set.
func (is *Issuer) Keys() *KeySet { return is.keys }

const (
	familyPrefix   = "fam:"
	refreshPrefix  = "rt:"
	rotatedPrefix  = "rot:"
	sessionKeyPref = "sk:"
)

// Login starts a family for id and returns its first token pair.
func (is *Issuer) Login(ctx context.Context, id Identity, tokens *Tokens) (*Pair, error) {
	now := is.Now()
	f := &Family{ID: NewID(), Identity: id, Tokens: tokens, Created: now, Rotated: now}
	refresh := NewID()
	f.Current = Hash(refresh)
	if err := is.saveFamily(ctx, f); err != nil {
		return nil, err
	}
	if err := is.saveRefresh(ctx, f.Current, f.ID, now); err != nil {
		return nil, err
	}
	if err := is.index(ctx, f); err != nil {
		return nil, err
	}
	return is.pair(f, refresh)
}

// index lists f under its user until its end, refresh_ttl after its last
// rotation (the admin API revokes a person's logins through it). Every
// rotation lists it again, since a family lives as long as it keeps
// rotating.
func (is *Issuer) index(ctx context.Context, f *Family) error {
	end := f.Rotated.Add(is.cfg.RefreshTTL)
	if err := indexLogin(ctx, is.store, &f.Identity, "f:"+f.ID, end, is.Now(), is.MaxLoginsPerUser, is.OnCapped); err != nil {
		return fmt.Errorf("indexing token family: %w", err)
	}
	return nil
}

// Refresh rotates a refresh token: the old one dies and a new pair comes
// back. Of concurrent refreshes with one token exactly one succeeds. A
// rotated-out token presented after the reuse grace revokes its family.
func (is *Issuer) Refresh(ctx context.Context, refresh string) (*Pair, error) {
	f, h, err := is.familyOf(ctx, refresh)
	if err != nil {
		return nil, err
	}
	now := is.Now()
	won, err := is.store.SetNX(ctx, rotatedPrefix+h, []byte(strconv.FormatInt(now.UnixNano(), 10)), is.cfg.RefreshTTL)
	if err != nil {
		return nil, fmt.Errorf("rotating refresh token: %w", err)
	}
	if !won || !hmac.Equal([]byte(f.Current), []byte(h)) {
		if is.withinGrace(ctx, h, now) {
			return nil, fmt.Errorf("%w: refresh token already used", ErrInvalidGrant)
		}
		// Reuse of a rotated-out token: someone else holds the family.
		if err := is.revoke(ctx, f.ID); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w; family revoked", ErrInvalidGrant, ErrRefreshReused)
	}
	next := NewID()
	f.Current, f.Rotated = Hash(next), now
	if err := is.saveRefresh(ctx, f.Current, f.ID, now); err != nil {
		is.unclaim(ctx, f.ID, h)
		return nil, err
	}
	// Listed with its new end before the family is: a failure here then
	// rotates nothing (after the rotation it failed a refresh whose new
	// token nobody got, and the retry with the old one revoked the
	// family), and an end listed later than the family's is harmless.
	if err := is.index(ctx, f); err != nil {
		is.unclaim(ctx, f.ID, h)
		return nil, err
	}
	if err := is.replaceFamily(ctx, f); errors.Is(err, errFamilyEnded) {
		// Revoked while this refresh ran: the revocation stands.
		return nil, fmt.Errorf("%w: %w", ErrInvalidGrant, err)
	} else if err != nil {
		if landed, _ := is.isCurrent(ctx, f.ID, f.Current); landed {
			// The family was stored and only its confirmation failed (a
			// Redis WAIT short of replicas leaves the write on the master):
			// h is rotated out, so a 503 would leave the client with a
			// token that can only be refused or, past reuse_grace, revoke
			// the login. The new pair is the client's best chance; if a
			// failover loses the write, it logs in again.
			return is.pair(f, next)
		}
		is.unclaim(ctx, f.ID, h)
		return nil, err
	}
	return is.pair(f, next)
}

// isCurrent reports whether the family sid's current refresh token hash
// is h.
func (is *Issuer) isCurrent(ctx context.Context, sid, h string) (bool, error) {
	f, err := is.Family(ctx, sid)
	if err != nil {
		return false, err
	}
	return hmac.Equal([]byte(f.Current), []byte(h)), nil
}

// unclaim drops the rotation claim on refresh token hash h after a
// refresh that won it failed on a store error (a 503), if the family's
// current token is still h: nothing was rotated, and the client, which
// keeps h, must be able to try again. Left in place, the claim would make
// that retry, once past reuse_grace, look like reuse of a rotated-out token
// and revoke the family. A family the failed write did replace (a Redis
// WAIT short of replicas still leaves the write on the master) keeps the
// claim: h is rotated out, and Refresh hands out the new pair. Best
// effort: on a failure here the claim stays.
func (is *Issuer) unclaim(ctx context.Context, sid, h string) {
	if current, _ := is.isCurrent(ctx, sid, h); current {
		_ = is.store.Delete(ctx, rotatedPrefix+h)
	}
}

func (is *Issuer) withinGrace(ctx context.Context, h string, now time.Time) bool {
	b, err := is.store.Get(ctx, rotatedPrefix+h)
	if err != nil {
		return false
	}
	ns, err := strconv.ParseInt(string(b), 10, 64)
	return err == nil && now.Sub(time.Unix(0, ns)) <= is.cfg.ReuseGrace
}

// Revoke ends the family of a refresh token. Unknown tokens are ignored
// (RFC 7009: the answer does not tell an attacker which tokens exist).
func (is *Issuer) Revoke(ctx context.Context, refresh string) error {
	_, err := is.RevokeWho(ctx, refresh)
	return err
}

// RevokeWho is Revoke that also returns whose login it ended: nil when
// the token was unknown, expired or already revoked, which is no error.
func (is *Issuer) RevokeWho(ctx context.Context, refresh string) (*Identity, error) {
	f, _, err := is.familyOf(ctx, refresh)
	if errors.Is(err, ErrInvalidGrant) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := is.revoke(ctx, f.ID); err != nil {
		return nil, err
	}
	return &f.Identity, nil
}

// RevokeFamily ends a family by ID (the admin API). Unknown IDs are ignored.
func (is *Issuer) RevokeFamily(ctx context.Context, sid string) error {
	return is.revoke(ctx, sid)
}

// revoke ends a family by deleting it, not by marking it: every later
// write of a family is conditional on it still being stored
// (replaceFamily), so a refresh or an update that read the family before
// the revocation cannot undo it.
func (is *Issuer) revoke(ctx context.Context, sid string) error {
	if err := is.store.Delete(ctx, familyPrefix+sid); err != nil {
		return fmt.Errorf("revoking token family: %w", err)
	}
	return nil
}

// familyOf finds the live family of a refresh token.
func (is *Issuer) familyOf(ctx context.Context, refresh string) (*Family, string, error) {
	if !ValidID(refresh) {
		return nil, "", fmt.Errorf("%w: malformed refresh token", ErrInvalidGrant)
	}
	h := Hash(refresh)
	var rt refreshRecord
	err := getJSON(ctx, is.store, "refresh token", refreshPrefix+h, &rt)
	if errors.Is(err, ErrNotFound) {
		return nil, "", fmt.Errorf("%w: unknown refresh token", ErrInvalidGrant)
	} else if err != nil {
		return nil, "", err
	}
	if !is.Now().Before(rt.Issued.Add(is.cfg.RefreshTTL)) {
		return nil, "", fmt.Errorf("%w: refresh token expired", ErrInvalidGrant)
	}
	f, err := is.Family(ctx, rt.Family)
	if errors.Is(err, ErrNotFound) {
		return nil, "", fmt.Errorf("%w: family expired", ErrInvalidGrant)
	} else if err != nil {
		return nil, "", err
	}
	if f.Revoked {
		return nil, "", fmt.Errorf("%w: family revoked", ErrInvalidGrant)
	}
	return f, h, nil
}

// refreshRecord is what the store keeps of a refresh token, under its hash.
type refreshRecord struct {
	Family string    `json:"family"`
	Issued time.Time `json:"issued"`
}

func (is *Issuer) saveRefresh(ctx context.Context, h, family string, now time.Time) error {
	return putJSON(ctx, is.store, "storing refresh token", refreshPrefix+h, refreshRecord{Family: family, Issued: now}, is.cfg.RefreshTTL)
}

// Family returns a family by ID, revoked or not, or ErrNotFound.
func (is *Issuer) Family(ctx context.Context, sid string) (*Family, error) {
	v, _, err := loadRecord(ctx, is.store, familyPrefix+sid, decodeFamily)
	if err != nil {
		return nil, err
	}
	// A copy: the cache's is shared.
	f := *v.(*Family)
	if f.Tokens != nil {
		t := *f.Tokens
		f.Tokens = &t
	}
	return &f, nil
}

// decodeFamily decodes a stored family for the cache.
func decodeFamily(b []byte) (any, error) {
	f := new(Family)
	if err := json.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("decoding token family: %w", err)
	}
	return f, nil
}

// UpdateFamily applies change to a live family and stores it. A family
// that was revoked (deleted) or expired is ErrInvalidToken: its tokens are
// dead, which is the client's news, not a store failure. The family is
// stored only if it is still as read (Store.Swap); otherwise change is
// applied again to the newer family. A save of WeChat tokens (a background
// refresh) that read the family just before the client rotated its pair
// would otherwise write back the old refresh token's hash: the rotation
// lost, the client's new refresh token is refused and the user logged out.
// change must therefore only set what it changes. Like a touch, the swap
// is not waited for (wait_replicas): a failover may lose it, which costs
// another WeChat refresh; rotations (Refresh) are waited for.
func (is *Issuer) UpdateFamily(ctx context.Context, sid string, change func(*Family)) (*Family, error) {
	for range updateTries {
		b, err := is.store.Get(ctx, familyPrefix+sid)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: %w", ErrInvalidToken, errFamilyEnded)
		} else if err != nil {
			return nil, err
		}
		var f Family
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("decoding token family: %w", err)
		}
		if f.Revoked {
			return nil, fmt.Errorf("%w: family revoked", ErrInvalidToken)
		}
		change(&f)
		nb, err := json.Marshal(&f)
		if err != nil {
			return nil, fmt.Errorf("saving token family: %w", err)
		}
		ok, err := is.store.Swap(ctx, familyPrefix+sid, b, nb, f.Rotated.Add(is.cfg.RefreshTTL).Sub(is.Now()))
		if err != nil {
			return nil, fmt.Errorf("saving token family: %w", err)
		}
		if ok {
			return &f, nil
		}
		// Changed or ended since the read: read it again.
	}
	return nil, fmt.Errorf("%w: token family %s changed %d times during an update", ErrUnavailable, sid, updateTries)
}

// updateTries bounds the reads of UpdateFamily and Manager.Update: a
// record changes at most at each rotation, touch and WeChat refresh, so a
// few always suffice.
const updateTries = 5

// saveFamily stores a new family.
func (is *Issuer) saveFamily(ctx context.Context, f *Family) error {
	ttl := f.Rotated.Add(is.cfg.RefreshTTL).Sub(is.Now())
	return putJSON(ctx, is.store, "saving token family", familyPrefix+f.ID, f, ttl)
}

// errFamilyEnded is replaceFamily's error for a family revoked (deleted) or
// expired since it was read.
var errFamilyEnded = errors.New("session: token family ended")

// replaceFamily stores a changed family only if it is still stored.
func (is *Issuer) replaceFamily(ctx context.Context, f *Family) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("saving token family: %w", err)
	}
	ok, err := is.store.Replace(ctx, familyPrefix+f.ID, b, f.Rotated.Add(is.cfg.RefreshTTL).Sub(is.Now()))
	switch {
	case err != nil:
		return fmt.Errorf("saving token family: %w", err)
	case !ok:
		return errFamilyEnded
	}
	return nil
}

// Authenticate verifies an access token and returns its live family. A
// token whose family was revoked stops working here, before its exp.
func (is *Issuer) Authenticate(ctx context.Context, access string) (*Family, error) {
	sid, err := is.verify(access)
	if err != nil {
		return nil, err
	}
	f, err := is.Family(ctx, sid)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: family expired", ErrInvalidToken)
	} else if err != nil {
		return nil, err
	}
	if f.Revoked {
		return nil, fmt.Errorf("%w: family revoked", ErrInvalidToken)
	}
	// The store drops a family refresh_ttl after its last rotation; a
	// cached copy (cache.go) may outlive that by a moment, so the end is
	// checked here too.
	if !is.Now().Before(f.Rotated.Add(is.cfg.RefreshTTL)) {
		return nil, fmt.Errorf("%w: family expired", ErrInvalidToken)
	}
	return f, nil
}

// verifiedToken is what the verification cache keeps of an access token.
type verifiedToken struct {
	sid string
	exp time.Time
}

// verify checks an access token (or finds it already checked) and returns
// its family ID. It keeps nothing that aliases access.
func (is *Issuer) verify(access string) (string, error) {
	now := is.Now()
	if v, ok := is.verified.Get(access); ok {
		vt := v.(*verifiedToken)
		if now.Before(vt.exp.Add(leeway)) {
			return vt.sid, nil
		}
		is.verified.Delete(access)
	}
	t, err := is.keys.Verify(access, is.issuer, is.issuer, is.Now)
	if err != nil {
		return "", err
	}
	sid, _ := t.PrivateClaims()["sid"].(string)
	if sid == "" {
		return "", fmt.Errorf("%w: no sid", ErrInvalidToken)
	}
	// Kept at most until exp (checked above against the issuer's clock) and
	// never longer than the access TTL in real time. The key is cloned:
	// callers pass strings that alias a request buffer (fiber's c.Get), and a
	// key that changed under the map would let the next request's bytes
	// match it, serving a forgery as this token's user.
	is.verified.Set(strings.Clone(access), &verifiedToken{sid: sid, exp: t.Expiration()}, min(t.Expiration().Sub(now)+leeway, is.cfg.AccessTTL))
	return sid, nil
}

func (is *Issuer) pair(f *Family, refresh string) (*Pair, error) {
	now := is.Now()
	id := &f.Identity
	t, err := identityClaims(id, is.issuer, is.issuer, now, now.Add(is.cfg.AccessTTL)).
		NotBefore(now).
		Claim("sid", f.ID).
		Build()
	if err != nil {
		return nil, err
	}
	access, err := is.keys.Sign(t)
	if err != nil {
		return nil, err
	}
	return &Pair{
		AccessToken: access, TokenType: "Bearer", ExpiresIn: int(is.cfg.AccessTTL / time.Second),
		RefreshToken: refresh, RefreshExpiresIn: int(is.cfg.RefreshTTL / time.Second),
		OpenID: id.OpenID, UnionID: id.UnionID,
	}, nil
}

// identityClaims starts a JWT with the claims access tokens and identity
// assertions share.
func identityClaims(id *Identity, issuer, audience string, iat, exp time.Time) *jwt.Builder {
	return jwt.NewBuilder().
		Issuer(issuer).
		Audience([]string{audience}).
		Subject(id.User()).
		IssuedAt(iat).
		Expiration(exp).
		JwtID(NewID()).
		Claim("openid", id.OpenID).
		Claim("unionid", id.UnionID).
		Claim("appid", id.AppID).
		Claim("scope", id.Scope)
}

// SaveSessionKey keeps a mini-program user's session_key on the server. A
// newer login replaces it, as a newer wx.login does at WeChat.
func (is *Issuer) SaveSessionKey(ctx context.Context, appID, openID string, key secret.Secret) error {
	return is.store.Set(ctx, sessionKeyPref+appID+":"+openID, []byte(key.Reveal()), is.cfg.RefreshTTL)
}

// SessionKey returns a mini-program user's session_key, or ErrNotFound.
func (is *Issuer) SessionKey(ctx context.Context, appID, openID string) (secret.Secret, error) {
	b, err := is.store.Get(ctx, sessionKeyPref+appID+":"+openID)
	if err != nil {
		return "", err
	}
	return secret.Secret(b), nil
}

// AssertionTTL is the lifetime of an X-WeChat-Identity assertion (DESIGN.md:
// at most 5 minutes).
const AssertionTTL = 5 * time.Minute

// assertionRenew: a cached assertion with less than this left is re-signed,
// so upstreams never receive one about to expire.
const assertionRenew = time.Minute

type assertion struct {
	token string
	exp   time.Time
}

// Assertion returns the signed identity assertion of id for audience (an
// upstream name). holder identifies the session or family (never a raw
// session ID); the assertion is cached per holder, audience and identity and
// re-signed only near its expiry, because signing on every request is too
// slow for the hot path.
func (is *Issuer) Assertion(holder string, id *Identity, audience string) (string, error) {
	key := holder + "\x00" + audience + "\x00" + id.OpenID + "\x00" + id.UnionID + "\x00" + id.Scope
	now := is.Now()
	if v, ok := is.assert.Get(key); ok {
		if a := v.(*assertion); a.exp.Sub(now) > assertionRenew {
			return a.token, nil
		}
	}
	exp := now.Add(is.assertTT)
	t, err := identityClaims(id, is.issuer, audience, now, exp).Build()
	if err != nil {
		return "", err
	}
	s, err := is.keys.Sign(t)
	if err != nil {
		return "", err
	}
	is.assert.Set(key, &assertion{token: s, exp: exp}, exp.Sub(now))
	return s, nil
}
