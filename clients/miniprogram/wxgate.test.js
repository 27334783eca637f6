'use strict'
// Tests of wxgate.js against a fake wx object that plays the gateway.
// Run: node --test clients/
const test = require('node:test')
const assert = require('node:assert/strict')
const { createClient } = require('./wxgate')

// fakeGateway is a wx object whose request() behaves like wxgate (see
// docs/DESIGN.md "API clients", session/tokens.go): a login starts a token
// family; a refresh rotates its refresh token; a rotated-out refresh token
// presented again within the reuse grace (2 s) is refused with
// invalid_grant, later it revokes the whole family (reuse detection); a
// bearer of a revoked family is invalid_token, an expired one
// token_expired (the signature is checked before the family). Time is the
// fake's clock (advance). Calls are counted per path; hold(path, bearer)
// keeps answers back until the test releases them, in the order it wants.
// twin() is another wx object (another JS context) over the same gateway
// and storage.
function fakeGateway () {
  let n = 0
  const grace = 2000
  const access = new Map() // token -> {family, expired}
  const refresh = new Map() // refresh token -> family
  const families = new Map() // id -> {current, rotated: Map(rt -> ms), revoked}
  const calls = {}
  const storage = {}
  const pair = (fid) => {
    const a = 'at' + (++n)
    const r = 'rt' + n
    access.set(a, { family: fid, expired: false })
    refresh.set(r, fid)
    families.get(fid).current = r
    return { access_token: a, refresh_token: r, token_type: 'Bearer', expires_in: 7200 }
  }
  const answer = (statusCode, data) => ({ statusCode, data, header: {} })
  const invalidGrant = () => answer(401, { error: 'invalid_grant', error_description: 'refresh token refused' })
  function refreshAnswer (rt) {
    gw.refreshedWith.push(rt)
    const f = families.get(refresh.get(rt))
    if (!f || f.revoked) return invalidGrant()
    if (f.current !== rt) {
      if (gw.now - f.rotated.get(rt) > grace) {
        f.revoked = true
        gw.revocations++
      }
      return invalidGrant()
    }
    f.rotated.set(rt, gw.now)
    return answer(200, pair(refresh.get(rt)))
  }
  function apiAnswer (opts, path) {
    const auth = (opts.header.Authorization || '').replace('Bearer ', '')
    const t = access.get(auth)
    if (!t) return answer(401, { error: 'invalid_token' })
    if (t.expired) return answer(401, { error: 'token_expired' })
    if (families.get(t.family).revoked) return answer(401, { error: 'invalid_token' })
    return answer(200, { ok: true, path, method: opts.method || 'GET', bearer: auth })
  }
  const gw = {
    calls,
    storage,
    now: 0,
    refreshedWith: [], // every refresh token presented, in order
    revocations: 0, // families revoked by reuse detection
    held: [], // answers kept back: {path, bearer, answer, release()}
    hold: null, // (path, bearer) -> whether to keep the answer back
    failRefresh: false,
    ticketAnswer: null, // the web-view ticket's answer instead of a ticket
    advance (ms) { gw.now += ms },
    expireAll () { for (const v of access.values()) v.expired = true },
    revokeRefresh () { for (const f of families.values()) f.revoked = true },
    twin () { return Object.assign({}, gw) },
    login (opts) { calls.login = (calls.login || 0) + 1; setImmediate(() => opts.success({ code: 'code' + n })) },
    getStorageSync (k) { return storage[k] === undefined ? '' : storage[k] },
    setStorageSync (k, v) { storage[k] = v },
    removeStorageSync (k) { delete storage[k] },
    request (opts) {
      const path = opts.url.replace('https://gw.example', '')
      calls[path] = (calls[path] || 0) + 1
      let res
      if (path === '/_wxgate/miniprogram/login') {
        const fid = 'f' + families.size
        families.set(fid, { current: null, rotated: new Map(), revoked: false })
        res = answer(200, pair(fid))
      } else if (path === '/_wxgate/token/refresh') {
        if (gw.failRefresh) return setImmediate(() => opts.fail({ errMsg: 'request:fail timeout' }))
        res = refreshAnswer(opts.data.refresh_token)
      } else if (path === '/_wxgate/miniprogram/webview-ticket') {
        res = apiAnswer(opts, path)
        if (res.statusCode === 200) res = gw.ticketAnswer || answer(200, { ticket: 'tk+/' + (++n), expires_in: 30 })
      } else if (path === '/_wxgate/token/revoke') {
        const f = families.get(refresh.get(opts.data.refresh_token))
        if (f) f.revoked = true
        res = answer(200, { revoked: true })
      } else {
        res = apiAnswer(opts, path)
      }
      const bearer = ((opts.header && opts.header.Authorization) || '').replace('Bearer ', '')
      if (gw.hold && gw.hold(path, bearer)) {
        const h = { path, bearer, answer: res, release: () => setImmediate(() => opts.success(h.answer)) }
        gw.held.push(h)
        return
      }
      setImmediate(() => opts.success(res))
    }
  }
  return gw
}

// until waits, a bounded number of event-loop turns, for cond to hold.
async function until (cond) {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return
    await new Promise((resolve) => setImmediate(resolve))
  }
  throw new Error('condition never held')
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

// Issue 9, finding 7: a 401 for a pair that was replaced meanwhile.

test('a late 401 for a pair a concurrent request already refreshed is retried with the new pair', async (t) => {
  const late = [
    ['token_expired', { error: 'token_expired' }],
    ['invalid_token', { error: 'invalid_token' }],
    ['login_required', { error: 'login_required' }],
    ['an upstream 401', { message: 'no' }]
  ]
  for (const [name, data] of late) {
    await t.test(name, async () => {
      const wx = fakeGateway()
      const api = createClient({ baseURL: 'https://gw.example', wx })
      await api.request({ url: '/api/warm' })
      const p1 = api.tokens()
      wx.expireAll()
      wx.hold = (path, bearer) => bearer === p1.access_token
      const a = api.request({ url: '/api/a' })
      const b = api.request({ url: '/api/b' })
      await until(() => wx.held.length === 2)
      const [heldA, heldB] = wx.held
      heldA.release() // token_expired: A refreshes to P2 and retries
      const resA = await a
      const p2 = api.tokens()
      assert.notEqual(p2.access_token, p1.access_token)
      heldB.answer = { statusCode: 401, data, header: {} } // B's answer for P1 arrives now
      heldB.release()
      const resB = await b
      assert.equal(wx.calls.login, 1, 'wx.login calls')
      assert.equal(wx.calls['/_wxgate/token/refresh'], 1, 'refresh calls')
      assert.equal(resA.statusCode, 200)
      assert.equal(resB.statusCode, 200)
      assert.equal(resB.data.bearer, p2.access_token)
      assert.deepEqual(wx.storage.wxgate_tokens, p2)
    })
  }
})

test('two clients on one wx with expired tokens: one refresh, no second login', async () => {
  const wx = fakeGateway()
  const first = createClient({ baseURL: 'https://gw.example', wx })
  await first.request({ url: '/api/warm' })
  const p1 = first.tokens()
  const second = createClient({ baseURL: 'https://gw.example', wx }) // another page
  wx.expireAll()
  const [r1, r2] = await Promise.all([first.request({ url: '/api/1' }), second.request({ url: '/api/2' })])
  assert.deepEqual(wx.refreshedWith, [p1.refresh_token], 'refresh tokens presented')
  assert.equal(wx.calls.login, 1, 'wx.login calls')
  assert.equal(wx.revocations, 0)
  assert.equal(r1.statusCode, 200)
  assert.equal(r2.statusCode, 200)
  assert.equal(r1.data.bearer, r2.data.bearer)
})

test('a client that held a pair another client rotated uses the stored pair, not the rotated-out refresh token', async (t) => {
  // Two JS contexts (two wx objects) share only storage, so nothing but
  // reading it guards them. Later reuse of P1's refresh token would make
  // the gateway revoke the family, P2 with it.
  const late = [
    ['token_expired as the gateway answers', null],
    ['invalid_token', { error: 'invalid_token' }]
  ]
  for (const [name, data] of late) {
    await t.test(name, async () => {
      const wx = fakeGateway()
      const first = createClient({ baseURL: 'https://gw.example', wx })
      await first.request({ url: '/api/warm' })
      const p1 = first.tokens()
      const second = createClient({ baseURL: 'https://gw.example', wx: wx.twin() })
      wx.expireAll()
      wx.hold = (path) => path === '/api/second'
      const pending = second.request({ url: '/api/second' }) // sent with P1
      await until(() => wx.held.length === 1)
      const r1 = await first.request({ url: '/api/first' }) // refreshes P1 -> P2
      assert.equal(r1.statusCode, 200)
      const p2 = first.tokens()
      wx.advance(60000) // past the reuse grace
      wx.hold = null
      if (data) wx.held[0].answer = { statusCode: 401, data, header: {} }
      wx.held[0].release()
      const r2 = await pending
      assert.equal(wx.revocations, 0, 'families revoked by reuse detection')
      assert.deepEqual(wx.refreshedWith, [p1.refresh_token], 'refresh tokens presented')
      assert.equal(wx.calls.login, 1, 'wx.login calls')
      assert.equal(r2.statusCode, 200)
      assert.equal(r2.data.bearer, p2.access_token)
      // The first client's pair still works.
      assert.equal((await first.request({ url: '/api/again' })).data.bearer, p2.access_token)
    })
  }
})

test('a client created before another one refreshed reads the stored pair before it sends', async () => {
  const wx = fakeGateway()
  const first = createClient({ baseURL: 'https://gw.example', wx })
  await first.request({ url: '/api/warm' })
  const p1 = first.tokens()
  const second = createClient({ baseURL: 'https://gw.example', wx: wx.twin() })
  wx.expireAll()
  await first.request({ url: '/api/first' })
  wx.advance(60000)
  const res = await second.request({ url: '/api/second' })
  assert.equal(wx.revocations, 0, 'families revoked by reuse detection')
  assert.deepEqual(wx.refreshedWith, [p1.refresh_token], 'refresh tokens presented')
  assert.equal(wx.calls.login, 1, 'wx.login calls')
  assert.equal(res.statusCode, 200)
  assert.equal((await first.request({ url: '/api/again' })).statusCode, 200)
})

test('a server that keeps answering 401 gets each request back after bounded retries', async (t) => {
  // An API that refuses every bearer; in one case another page stores a
  // new pair during every request, which must not make the client loop.
  for (const churn of [false, true]) {
    await t.test(churn ? 'pair replaced during every request' : 'pair unchanged', async () => {
      let n = 0
      let sends = 0
      const storage = {}
      const wx = {
        login (opts) { setImmediate(() => opts.success({ code: 'c' })) },
        getStorageSync (k) { return storage[k] || '' },
        setStorageSync (k, v) { storage[k] = v },
        removeStorageSync (k) { delete storage[k] },
        request (opts) {
          n++
          if (opts.url.endsWith('/miniprogram/login')) {
            return setImmediate(() => opts.success({ statusCode: 200, data: { access_token: 'a' + n, refresh_token: 'r' + n } }))
          }
          sends++
          if (churn) storage.wxgate_tokens = { access_token: 'other' + n, refresh_token: 'rother' + n }
          setImmediate(() => opts.success({ statusCode: 401, data: { error: 'invalid_token' } }))
        }
      }
      wx.login = ((login) => (opts) => { wx.logins = (wx.logins || 0) + 1; login(opts) })(wx.login)
      storage.wxgate_tokens = { access_token: 'a0', refresh_token: 'r0' }
      const api = createClient({ baseURL: 'https://gw.example', wx })
      const res = await api.request({ url: '/api/x' })
      assert.equal(res.statusCode, 401)
      assert.ok(sends <= 3, sends + ' sends')
      assert.ok((wx.logins || 0) <= 1, wx.logins + ' logins')
    })
  }
})

test('storage that cannot be written: the pair lives in memory and no stale stored pair is used', async () => {
  const wx = fakeGateway()
  wx.storage.wxgate_tokens = { access_token: 'stale', refresh_token: 'rt-stale' }
  wx.setStorageSync = () => { throw new Error('storage full') }
  const api = createClient({ baseURL: 'https://gw.example', wx })
  assert.equal((await api.request({ url: '/api/1' })).statusCode, 200) // stale is refused: login
  assert.equal((await api.request({ url: '/api/2' })).statusCode, 200)
  assert.equal(wx.calls.login, 1)
  assert.equal(wx.storage.wxgate_tokens, undefined)
})

test('a 200 answer that is not a token pair is a failure, never stored or sent as a bearer', async () => {
  for (const path of ['/_wxgate/miniprogram/login', '/_wxgate/token/refresh']) {
    const wx = fakeGateway()
    const api = createClient({ baseURL: 'https://gw.example', wx })
    if (path.endsWith('/refresh')) {
      await api.request({ url: '/api/warm' })
      wx.expireAll()
    }
    // A proxy or WAF in front answering with its own page.
    const request = wx.request
    const bearers = []
    wx.request = (opts) => {
      if (opts.url.endsWith(path)) return setImmediate(() => opts.success({ statusCode: 200, data: '<html>blocked</html>', header: {} }))
      if (opts.header && opts.header.Authorization) bearers.push(opts.header.Authorization)
      return request(opts)
    }
    await assert.rejects(api.request({ url: '/api/x' }), (err) => err.name === 'WxgateError' && /not a token pair/.test(err.message), path)
    assert.equal(wx.storage.wxgate_tokens, undefined, path + ': what is stored')
    assert.ok(!bearers.includes('Bearer undefined'), path + ': sent "Bearer undefined"')
    wx.request = request
    assert.equal((await api.request({ url: '/api/x' })).statusCode, 200, path + ': the next request')
  }
})

test('webviewURL: a fresh ticket for each web-view, after a refresh when the access token expired', async () => {
  const gw = fakeGateway()
  const api = createClient({ wx: gw, baseURL: 'https://gw.example' })
  const first = await api.webviewURL('/orders?id=7')
  const m = first.match(/^https:\/\/gw\.example\/_wxgate\/handoff\?ticket=([^&]+)&rd=(.+)$/)
  assert.ok(m, first)
  assert.strictEqual(decodeURIComponent(m[1]).startsWith('tk+/'), true)
  assert.strictEqual(decodeURIComponent(m[2]), '/orders?id=7')
  gw.expireAll()
  const second = await api.webviewURL()
  assert.notStrictEqual(second, first)
  assert.ok(second.endsWith('&rd=%2F'), second)
  assert.strictEqual(gw.calls['/_wxgate/token/refresh'], 1)
  assert.strictEqual(gw.calls['/_wxgate/miniprogram/webview-ticket'], 3)
})

test('webviewURL: a refusal or an answer without a ticket is an error, never a link', async (t) => {
  for (const [name, ans, status] of [
    ['403 (not a mini-program login)', { statusCode: 403, data: { error: 'forbidden' }, header: {} }, 403],
    ['200 without a ticket', { statusCode: 200, data: { expires_in: 30 }, header: {} }, 200]
  ]) {
    await t.test(name, async () => {
      const gw = fakeGateway()
      gw.ticketAnswer = ans
      const api = createClient({ wx: gw, baseURL: 'https://gw.example' })
      await assert.rejects(api.webviewURL('/x'), (err) => err.name === 'WxgateError' && err.statusCode === status)
    })
  }
})
