// wxgate client for WeChat mini programs. No dependencies: copy this file
// into the mini program and require it.
//
//   const { createClient } = require('./wxgate')
//   const api = createClient({ baseURL: 'https://api.example.com' })
//   const res = await api.request({ url: '/api/orders' })   // logs in on first use
//
// It logs in with wx.login, keeps the token pair in storage, sends
// "Authorization: Bearer", and when the gateway answers token_expired it
// refreshes once (concurrent requests share that one refresh) and retries.
// When the refresh token is refused (invalid_grant) it logs in again.
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

function createClient (options) {
  const opts = Object.assign({ prefix: DEFAULT_PREFIX, storageKey: DEFAULT_STORAGE_KEY }, options)
  const wx = opts.wx || globalThis.wx
  if (!wx) throw new Error('wxgate: no wx object')
  if (!opts.baseURL) throw new Error('wxgate: baseURL is required')

  let tokens = null
  try { tokens = wx.getStorageSync(opts.storageKey) || null } catch (_) { tokens = null }
  let refreshing = null // the one refresh in flight, shared
  let loggingIn = null // the one login in flight, shared

  function save (pair) {
    tokens = pair
    try { wx.setStorageSync(opts.storageKey, pair) } catch (_) { /* memory copy still works */ }
    return pair
  }

  function clear () {
    tokens = null
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
    if (!loggingIn) {
      loggingIn = (async () => {
        const { code } = await call(wx.login, {})
        const res = await post('/miniprogram/login', { code })
        if (res.statusCode !== 200) throw fail(res, 'login')
        return save(res.data)
      })().finally(() => { loggingIn = null })
    }
    return loggingIn
  }

  // refresh rotates the pair once for every caller that saw token_expired
  // with the same access token. A refused refresh token means a new login.
  function refresh (expiredAccess) {
    if (tokens && tokens.access_token !== expiredAccess) return Promise.resolve(tokens) // already refreshed
    if (!refreshing) {
      refreshing = (async () => {
        if (!tokens || !tokens.refresh_token) return login()
        const res = await post('/token/refresh', { refresh_token: tokens.refresh_token })
        if (res.statusCode === 200) return save(res.data)
        if (res.data && res.data.error === 'invalid_grant') {
          clear()
          return login()
        }
        throw fail(res, 'refresh')
      })().finally(() => { refreshing = null })
    }
    return refreshing
  }

  function send (req, access) {
    const header = Object.assign({}, req.header, { Authorization: 'Bearer ' + access })
    const url = /^https?:\/\//.test(req.url) ? req.url : opts.baseURL + req.url
    return call(wx.request, Object.assign({}, req, { url, header }))
  }

  // request is wx.request with the bearer added; it resolves with wx's
  // response ({statusCode, data, header}) once it is not a token failure.
  async function request (req) {
    let pair = tokens || await login()
    let res = await send(req, pair.access_token)
    const error = res.statusCode === 401 && res.data && res.data.error
    if (error === 'token_expired') {
      pair = await refresh(pair.access_token)
      res = await send(req, pair.access_token)
    } else if (error === 'invalid_token' || error === 'login_required') {
      clear()
      pair = await login()
      res = await send(req, pair.access_token)
    }
    return res
  }

  // logout revokes the token family on the gateway and forgets the pair.
  async function logout () {
    const rt = tokens && tokens.refresh_token
    clear()
    if (rt) await post('/token/revoke', { refresh_token: rt })
  }

  return { request, login, logout, tokens: () => tokens }
}

module.exports = { createClient, WxgateError }
