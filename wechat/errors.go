package wechat

import (
	"errors"
	"fmt"
)

// Error is an error reported by a WeChat API as a non-zero errcode. WeChat
// answers errors with HTTP 200, so Code is the only reliable signal: the
// errmsg text (and its "rid:" suffix) changes over the years and is kept in
// Msg for logs only. Never branch on Msg.
type Error struct {
	Code int    // WeChat errcode
	Msg  string // WeChat errmsg, for logs; may be empty
	// Endpoint is the API path that answered, such as "/sns/oauth2/access_token".
	Endpoint string
}

func (e *Error) Error() string {
	return fmt.Sprintf("wechat: %s: errcode %d: %s", e.Endpoint, e.Code, e.Msg)
}

// Is reports whether target is an *Error with the same Code, so that
// errors.Is(err, &wechat.Error{Code: wechat.CodeUsed}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errcodes the gateway acts on. The full table is in WECHAT-API.md section 6.
const (
	CodeSystemBusy        = -1
	CodeInvalidCredential = 40001
	CodeInvalidGrantType  = 40002
	CodeInvalidOpenID     = 40003
	CodeInvalidAppID      = 40013
	CodeInvalidToken      = 40014
	CodeInvalidCode       = 40029
	CodeInvalidRefresh    = 40030
	CodeInvalidSecret     = 40125
	CodeCodeUsed          = 40163
	CodeIPNotWhitelisted  = 40164
	CodeCodeBlocked       = 40226
	CodeTokenMissing      = 41001
	CodeAppIDMissing      = 41002
	CodeRefreshMissing    = 41003
	CodeSecretMissing     = 41004
	CodeCodeMissing       = 41008
	CodeTokenExpired      = 42001
	CodeRefreshExpired    = 42002
	CodeRequirePOST       = 43002
	CodeDailyQuota        = 45009
	CodeMinuteQuota       = 45011
	CodeUnauthorized      = 48001
	CodeSessionKeyExpired = 87007
	CodeBadSigMethod      = 87008
	CodeBadSignature      = 87009

	// Refusals of an app token fetch that no retry mends: a person must
	// act on mp.weixin.qq.com (NeedsPerson).
	CodeSecretFrozen       = 40243 // the AppSecret is frozen
	CodeAPIBanned          = 50004 // the API is banned for this account
	CodeAccountFrozen      = 50007 // the account is frozen
	CodeRiskyIPWaiting     = 89501 // a new IP is waiting for the admin's confirmation
	CodeRiskyIPConfirm     = 89503 // a new IP needs the admin's confirmation
	CodeRiskyIPRefused     = 89506 // the admin refused the IP: blocked 24 hours
	CodeRiskyIPUnconfirmed = 89507 // the admin did not confirm in time: blocked 1 hour
)

// BlockingCodes are the errcodes of an app token fetch that no retry
// mends: an IP to whitelist or confirm, a daily quota, a secret, a frozen
// account. A holder meeting one pauses fetching (ErrBlocked) instead of
// retrying, and reports it.
var BlockingCodes = []int{
	CodeIPNotWhitelisted, CodeDailyQuota, CodeInvalidSecret, CodeSecretFrozen, CodeAPIBanned,
	CodeAccountFrozen, CodeRiskyIPWaiting, CodeRiskyIPConfirm, CodeRiskyIPRefused, CodeRiskyIPUnconfirmed,
}

// NeedsPerson reports whether err carries one of BlockingCodes.
func NeedsPerson(err error) bool { return HasCode(err, BlockingCodes...) }

// Code returns the WeChat errcode carried by err, and whether there was one.
func Code(err error) (int, bool) {
	var we *Error
	if errors.As(err, &we) {
		return we.Code, true
	}
	return 0, false
}

// HasCode reports whether err carries one of the given WeChat errcodes.
func HasCode(err error, codes ...int) bool {
	c, ok := Code(err)
	if !ok {
		return false
	}
	for _, want := range codes {
		if c == want {
			return true
		}
	}
	return false
}

// ErrUnavailable wraps failures to reach WeChat at all (transport errors,
// timeouts, HTTP 5xx, bodies that are not JSON). It is distinct from *Error,
// which is an answer.
var ErrUnavailable = errors.New("wechat: unavailable")
