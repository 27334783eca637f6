// wxgate client for WeChat mini programs. No dependencies: copy this file
// into the mini program and require it.
//
//   const { createClient } = require('./wxgate')
//   const api = createClient({ baseURL: 'https://api.example.com' })
//   const res = await api.request({ url: '/api/orders' })   // logs in on first use
//
//   // A <web-view> of a page behind wxgate, logged in as the same person:
//   // a fresh one-time link (30 s, single use) each time the web-view opens.
//   const src = await api.webviewURL('/orders?id=7')
//
// It logs in with wx.login, keeps the token pair in storage, sends
// "Authorization: Bearer", and when the gateway answers token_expired it
// refreshes once (concurrent requests share that one refresh) and retries.
// When the refresh token is refused (invalid_grant) it logs in again.
//
// Storage is the one truth about the current pair. Every page may create
// its own client; they all read the stored pair before each request,
// refresh and login, and clients on the same wx object share one refresh
// and one login in flight. The gateway rotates the refresh token on every
// use and revokes the whole login when a rotated-out one comes back, so a
// client must never refresh with a pair that another client has already
// replaced: it uses the stored pair instead.
//
// A 401 is acted on (refresh for token_expired, login for invalid_token or
// login_required) only if the pair the request was sent with is still the
// stored one. If the pair was replaced meanwhile, the request is sent again
// with the current pair; that happens at most once per request, and so does
// the refresh or login, so a server that keeps answering 401 ends with the
// 401 given back to the caller, not with a loop.
'use strict'

const DEFAULT_PREFIX = '/_wxgate'
const DEFAULT_STORAGE_KEY = 'wxgate_tokens'

class WxgateError extends Error {
  constructor (message, { statusCode, error, data } = {}) {
    super(message)
    this.name = 'WxgateError'
    this.statusCode = statusCode
    this.error = error
    this.data = data
  }
}

// promisify wraps a wx API taking {success, fail}.
function call (fn, options) {
  return new Promise((resolve, reject) => {
    fn(Object.assign({}, options, {
      success: resolve,
      fail: (err) => reject(new WxgateError((err && err.errMsg) || 'wx call failed', { data: err }))
    }))
  })
}

// shared holds, per wx object and storage key, what all clients of one mini
// program share: the pair (for when storage fails) and the refresh and login
// in flight. Pages run in one JS context with one wx, so they meet here.
const shared = new WeakMap()

function sharedState (wx, key) {
  let byKey = shared.get(wx)
  if (!byKey) shared.set(wx, (byKey = new Map()))
  let st = byKey.get(key)
  if (!st) byKey.set(key, (st = { pair: null, storageWorks: true, refreshing: null, loggingIn: null }))
  return st
}

// isPair reports whether v looks like a token pair. A 200 from something in
// front of the gateway (a proxy's or WAF's page) is not one: stored, it would
// replace the pair and be sent as "Bearer undefined".
function isPair (v) {
  return !!v && typeof v.access_token === 'string' && v.access_token !== '' && typeof v.refresh_token === 'string'
}

// samePair reports whether a and b are the same token pair.
function samePair (a, b) {
  return !!a && !!b && a.access_token === b.access_token && a.refresh_token === b.refresh_token
}

function createClient (options) {
  const opts = Object.assign({ prefix: DEFAULT_PREFIX, storageKey: DEFAULT_STORAGE_KEY }, options)
  const wx = opts.wx || globalThis.wx
  if (!wx) throw new Error('wxgate: no wx object')
  if (!opts.baseURL) throw new Error('wxgate: baseURL is required')
  const st = sharedState(wx, opts.storageKey)

  // current is the stored pair, read afresh: another page or client may
  // have replaced it. Memory stands in only while storage fails.
  function current () {
    if (st.storageWorks) {
      try {
        const v = wx.getStorageSync(opts.storageKey)
        st.pair = v && v.access_token ? v : null
      } catch (_) { /* unreadable: the shared memory copy */ }
    }
    return st.pair
  }

  function save (pair) {
    st.pair = pair
    try {
      wx.setStorageSync(opts.storageKey, pair)
      st.storageWorks = true
    } catch (_) {
      // A stale stored pair would later be refreshed with a rotated-out
      // token and revoke the login: drop it and keep the pair in memory.
      st.storageWorks = false
      try { wx.removeStorageSync(opts.storageKey) } catch (_) { /* nothing more to do */ }
    }
    return pair
  }

  function clear () {
    st.pair = null
    try { wx.removeStorageSync(opts.storageKey) } catch (_) { /* nothing stored */ }
  }

  async function post (path, data, bearer) {
    const header = { 'content-type': 'application/json' }
    if (bearer) header.Authorization = 'Bearer ' + bearer
    return call(wx.request, { url: opts.baseURL + opts.prefix + path, method: 'POST', data, header })
  }

  function fail (res, what) {
    const data = res.data || {}
    return new WxgateError(what + ': ' + (data.error_description || data.error || ('HTTP ' + res.statusCode)),
      { statusCode: res.statusCode, error: data.error, data })
  }

  // login runs wx.login and the code exchange; concurrent callers share it.
  function login () {
    if (!st.loggingIn) {
      st.loggingIn = (async () => {
        const { code } = await call(wx.login, {})
        const res = await post('/miniprogram/login', { code })
        if (res.statusCode !== 200) throw fail(res, 'login')
        if (!isPair(res.data)) throw new WxgateError('login: not a token pair', { statusCode: res.statusCode, data: res.data })
        return save(res.data)
      })().finally(() => { st.loggingIn = null })
    }
    return st.loggingIn
  }

  // relogin replaces a pair the gateway refused with a new login, unless
  // the stored pair is already another one.
  function relogin (used) {
    const now = current()
    if (now && !samePair(now, used)) return Promise.resolve(now)
    return login()
  }

  // refresh rotates the pair once for every caller that saw token_expired
  // with it. The refresh token sent is always the stored one: sending one
  // that another client rotated out would revoke the login.
  function refresh (used) {
    const now = current()
    if (now && !samePair(now, used)) return Promise.resolve(now)
    if (!now || !now.refresh_token) return login()
    if (!st.refreshing) {
      st.refreshing = (async () => {
        const res = await post('/token/refresh', { refresh_token: now.refresh_token })
        if (res.statusCode === 200) {
          if (isPair(res.data)) return save(res.data)
          // The gateway may or may not have rotated the pair: keeping it
          // could present a rotated-out refresh token later, which revokes
          // the login. Forget it; the next request logs in.
          clear()
          throw new WxgateError('refresh: not a token pair', { statusCode: res.statusCode, data: res.data })
        }
        if (res.data && res.data.error === 'invalid_grant') {
          // Another JS context may have rotated it first (the gateway's
          // reuse grace answers that without revoking): take its pair.
          const after = current()
          if (after && !samePair(after, now)) return after
          clear()
          return login()
        }
        throw fail(res, 'refresh')
      })().finally(() => { st.refreshing = null })
    }
    return st.refreshing
  }

  function send (req, access) {
    const header = Object.assign({}, req.header, { Authorization: 'Bearer ' + access })
    const url = /^https?:\/\//.test(req.url) ? req.url : opts.baseURL + req.url
    return call(wx.request, Object.assign({}, req, { url, header }))
  }

  // request is wx.request with the bearer added; it resolves with wx's
  // response ({statusCode, data, header}) once it is not a token failure,
  // or with the last 401 once its retries are spent.
  async function request (req) {
    let pair = current() || await login()
    let res = await send(req, pair.access_token)
    let resent = false // sent again because the pair was replaced meanwhile
    let renewed = false // refreshed or logged in for this request
    while (res.statusCode === 401) {
      const now = current()
      if (now && !samePair(now, pair)) {
        if (resent) break
        resent = true
        pair = now
      } else {
        const error = res.data && res.data.error
        if (renewed) break
        if (error === 'token_expired') {
          pair = await refresh(pair)
        } else if (error === 'invalid_token' || error === 'login_required') {
          pair = await relogin(pair)
        } else {
          break
        }
        renewed = true
      }
      res = await send(req, pair.access_token)
    }
    return res
  }

  // webviewURL is the URL to open a <web-view> at so that the page (path
  // on baseURL) is logged in as this mini program's user: the gateway's
  // /handoff with a one-time web-view ticket, which lives 30 s and works
  // once, so ask for it right before the web-view opens.
  async function webviewURL (path) {
    const res = await request({ url: opts.prefix + '/miniprogram/webview-ticket', method: 'POST', data: {}, header: { 'content-type': 'application/json' } })
    if (res.statusCode !== 200 || !res.data || typeof res.data.ticket !== 'string' || !res.data.ticket) {
      throw fail(res, 'webview ticket')
    }
    return opts.baseURL + opts.prefix + '/handoff?ticket=' + encodeURIComponent(res.data.ticket) +
      '&rd=' + encodeURIComponent(path || '/')
  }

  // logout revokes the token family on the gateway and forgets the pair.
  async function logout () {
    const pair = current()
    const rt = pair && pair.refresh_token
    clear()
    if (rt) await post('/token/revoke', { refresh_token: rt })
  }

  return { request, login, logout, webviewURL, tokens: current }
}

module.exports = { createClient, WxgateError }
