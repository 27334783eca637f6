'use strict'
// Tests of wxgate.js against a fake wx object that plays the gateway.
// Run: node --test clients/
const test = require('node:test')
const assert = require('node:assert/strict')
const { createClient } = require('./wxgate')

// fakeGateway is a wx object whose request() behaves like wxgate: codes,
// token pairs, rotation with reuse detection, and an API that checks the
// bearer. Calls are counted per path.
function fakeGateway () {
  let n = 0
  const access = new Map() // token -> {expired}
  const refresh = new Set() // live refresh tokens
  const calls = {}
  const storage = {}
  const pair = () => {
    const a = 'at' + (++n)
    const r = 'rt' + n
    access.set(a, { expired: false })
    refresh.add(r)
    return { access_token: a, refresh_token: r, token_type: 'Bearer', expires_in: 7200 }
  }
  const reply = (opts, statusCode, data) => setImmediate(() => opts.success({ statusCode, data, header: {} }))
  const gw = {
    calls,
    storage,
    expireAll () { for (const v of access.values()) v.expired = true },
    revokeRefresh () { refresh.clear() },
    failRefresh: false,
    login (opts) { calls.login = (calls.login || 0) + 1; setImmediate(() => opts.success({ code: 'code' + n })) },
    getStorageSync (k) { return storage[k] },
    setStorageSync (k, v) { storage[k] = v },
    removeStorageSync (k) { delete storage[k] },
    request (opts) {
      const path = opts.url.replace('https://gw.example', '')
      calls[path] = (calls[path] || 0) + 1
      if (path === '/_wxgate/miniprogram/login') return reply(opts, 200, pair())
      if (path === '/_wxgate/token/refresh') {
        if (gw.failRefresh) return setImmediate(() => opts.fail({ errMsg: 'request:fail timeout' }))
        const rt = opts.data.refresh_token
        if (!refresh.has(rt)) return reply(opts, 401, { error: 'invalid_grant' })
        refresh.delete(rt)
        return reply(opts, 200, pair())
      }
      if (path === '/_wxgate/token/revoke') { refresh.clear(); return reply(opts, 200, { revoked: true }) }
      const auth = (opts.header.Authorization || '').replace('Bearer ', '')
      const t = access.get(auth)
      if (!t) return reply(opts, 401, { error: 'invalid_token' })
      if (t.expired) return reply(opts, 401, { error: 'token_expired' })
      return reply(opts, 200, { ok: true, path, method: opts.method || 'GET', bearer: auth })
    }
  }
  return gw
}

test('logs in on first use, stores the pair and sends the bearer', async () => {
  const wx = fakeGateway()
  const api = createClient({ baseURL: 'https://gw.example', wx })
  const res = await api.request({ url: '/api/orders', method: 'POST', data: { a: 1 } })
  assert.equal(res.statusCode, 200)
  assert.equal(res.data.method, 'POST')
  assert.equal(res.data.bearer, api.tokens().access_token)
  assert.equal(wx.calls.login, 1)
  assert.deepEqual(wx.storage.wxgate_tokens, api.tokens())
  // A second client finds the stored pair: no new login.
  const again = createClient({ baseURL: 'https://gw.example', wx })
  assert.equal((await again.request({ url: '/api/x' })).statusCode, 200)
  assert.equal(wx.calls.login, 1)
})

test('token_expired: one refresh shared by concurrent requests, each retried once', async () => {
  const wx = fakeGateway()
  const api = createClient({ baseURL: 'https://gw.example', wx })
  await api.request({ url: '/api/warm' })
  wx.expireAll()
  const results = await Promise.all(Array.from({ length: 8 }, (_, i) => api.request({ url: '/api/r' + i })))
  for (const r of results) assert.equal(r.statusCode, 200)
  assert.equal(wx.calls['/_wxgate/token/refresh'], 1)
  assert.equal(wx.calls.login, 1)
  const first = results[0].data.bearer
  for (const r of results) assert.equal(r.data.bearer, first)
})

test('invalid_grant on refresh: logs in again and retries', async () => {
  const wx = fakeGateway()
  const api = createClient({ baseURL: 'https://gw.example', wx })
  await api.request({ url: '/api/warm' })
  wx.expireAll()
  wx.revokeRefresh()
  const res = await api.request({ url: '/api/after' })
  assert.equal(res.statusCode, 200)
  assert.equal(wx.calls.login, 2)
  assert.equal(wx.calls['/_wxgate/token/refresh'], 1)
})

test('invalid_token: logs in again once', async () => {
  const wx = fakeGateway()
  wx.storage.wxgate_tokens = { access_token: 'forged', refresh_token: 'rtX' }
  const api = createClient({ baseURL: 'https://gw.example', wx })
  const res = await api.request({ url: '/api/x' })
  assert.equal(res.statusCode, 200)
  assert.equal(wx.calls.login, 1)
})

test('a failing refresh rejects the request and keeps the pair for later', async () => {
  const wx = fakeGateway()
  const api = createClient({ baseURL: 'https://gw.example', wx })
  await api.request({ url: '/api/warm' })
  const before = api.tokens()
  wx.expireAll()
  wx.failRefresh = true
  await assert.rejects(api.request({ url: '/api/x' }), /timeout/)
  assert.deepEqual(api.tokens(), before)
  wx.failRefresh = false
  assert.equal((await api.request({ url: '/api/x' })).statusCode, 200)
})

test('logout revokes the family and forgets the pair', async () => {
  const wx = fakeGateway()
  const api = createClient({ baseURL: 'https://gw.example', wx })
  await api.request({ url: '/api/warm' })
  await api.logout()
  assert.equal(wx.calls['/_wxgate/token/revoke'], 1)
  assert.equal(api.tokens(), null)
  assert.equal(wx.storage.wxgate_tokens, undefined)
})
