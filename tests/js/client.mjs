#!/usr/bin/env node
// An unmodified y-websocket client, driven from Python tests (tests/jsclient.py).
//
// One-shot:    node client.mjs --url ws://127.0.0.1:P/yjs --room S/a.py [--insert T] [--insert-at N]
//                  [--expect T | --expect-contains A,B] [--timeout-ms N] [--hold-ms N]
//              -> one JSON line {"text", "synced", "reconnects"}; exit 1 with a reason on stderr.
// Index:       ... --room S --index [--expect-contains a.py,b.py]
//              -> {"keys", "files", "synced", "reconnects"}
// Auth:        ... --token JWT [--token-carrier query|protocol] (any mode): the token goes in the
//              `token` URL parameter (y-websocket's `params`, the default) or as the one offered
//              subprotocol (`protocols`).
// Refusal:     ... --expect-close: waits for the first close the server sends
//              -> {"closeCode", "closeReason", "synced"}; exit 1 if none comes in --timeout-ms.
// Interactive: ... --interactive; reads JSON commands on stdin, one a line:
//                {"op":"insert","text":T,"at":N} {"op":"dump"}
//                {"op":"wait","expect":T,"expect_contains":[..],"timeout_ms":N} {"op":"quit"}
//              First line {"event":"ready",..} once synced. Every command gets exactly one reply
//              line carrying its "op" (plus "error" if it failed); status changes are reported
//              as {"event":"status","status":..,"reconnects":n} lines.
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    room: { type: 'string' },
    insert: { type: 'string' },
    'insert-at': { type: 'string' },
    expect: { type: 'string' },
    'expect-contains': { type: 'string' },
    'timeout-ms': { type: 'string', default: '10000' },
    'hold-ms': { type: 'string', default: '0' },
    index: { type: 'boolean', default: false },
    interactive: { type: 'boolean', default: false },
    token: { type: 'string' },
    'token-carrier': { type: 'string', default: 'query' },
    'expect-close': { type: 'boolean', default: false }
  }
})

const fail = (message) => {
  process.stderr.write(`client.mjs: ${message}\n`)
  process.exit(1)
}

if (!opts.url || !opts.room) fail('--url and --room are required')
const timeoutMs = Number(opts['timeout-ms'])

const doc = new Y.Doc()
const text = doc.getText('content')
const files = doc.getMap('files')
// The polyfill is the one Node-specific bit: Node 20 has no global WebSocket.
const providerOpts = { WebSocketPolyfill: WebSocket }
if (opts.token !== undefined) {
  const carrier = opts['token-carrier']
  if (carrier === 'query') providerOpts.params = { token: opts.token }
  else if (carrier === 'protocol') providerOpts.protocols = [opts.token]
  else fail(`--token-carrier must be query or protocol, got ${JSON.stringify(carrier)}`)
}
const provider = new WebsocketProvider(opts.url, opts.room, doc, providerOpts)

let connects = 0
const reconnects = () => Math.max(0, connects - 1)
provider.on('status', ({ status }) => {
  if (status === 'connected') connects += 1
  if (opts.interactive) emit({ event: 'status', status, reconnects: reconnects() })
})

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function snapshot () {
  if (opts.index) {
    return { keys: [...files.keys()].sort(), files: files.toJSON(), synced: provider.synced, reconnects: reconnects() }
  }
  return { text: text.toString(), synced: provider.synced, reconnects: reconnects() }
}

/** Resolve once `check()` holds, checked on every doc change and sync; reject after `ms`. */
function waitFor (check, ms, describe) {
  return new Promise((resolve, reject) => {
    const tryIt = () => {
      if (!check()) return
      cleanup()
      resolve()
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`timeout after ${ms} ms waiting for ${describe()}`))
    }, ms)
    const cleanup = () => {
      clearTimeout(timer)
      doc.off('update', tryIt)
      provider.off('sync', tryIt)
    }
    doc.on('update', tryIt)
    provider.on('sync', tryIt)
    tryIt()
  })
}

/** A predicate over the current state, and a sentence saying what it waits for. */
function expectation ({ expect, contains }) {
  const current = () => (opts.index ? [...files.keys()] : text.toString())
  const check = () => {
    if (!provider.synced) return false
    const value = current()
    if (expect !== undefined && value !== expect) return false
    return contains.every((part) => value.includes(part))
  }
  const describe = () => {
    let want = 'sync'
    if (expect !== undefined) want = `sync and text == ${JSON.stringify(expect)}`
    else if (contains.length) want = `sync and ${JSON.stringify(contains)} present`
    return `${want} (synced=${provider.synced}, now ${JSON.stringify(current())})`
  }
  return { check, describe }
}

function insert (value, at) {
  const pos = at === undefined || at === null ? text.length : Math.min(Number(at), text.length)
  text.insert(pos, value)
}

/** Let the socket drain what we sent, so destroying the provider does not drop an edit. */
async function settle () {
  const deadline = Date.now() + 2000
  while (provider.ws && provider.ws.bufferedAmount > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

async function finish (code) {
  await settle()
  provider.destroy()
  doc.destroy()
  process.exit(code)
}

async function oneShot () {
  const synced = expectation({ expect: undefined, contains: [] })
  await waitFor(synced.check, timeoutMs, synced.describe)
  if (opts.insert !== undefined) insert(opts.insert, opts['insert-at'])
  const contains = opts['expect-contains'] ? opts['expect-contains'].split(',') : []
  const wanted = expectation({ expect: opts.expect, contains })
  await waitFor(wanted.check, timeoutMs, wanted.describe)
  const hold = Number(opts['hold-ms'])
  if (hold > 0) await new Promise((resolve) => setTimeout(resolve, hold))
  emit(snapshot())
  await finish(0)
}

/** Resolve with the first close the server sends (a local close reports `null`: skipped). */
function firstServerClose (ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`timeout after ${ms} ms waiting for a close (synced=${provider.synced})`))
    }, ms)
    provider.on('connection-close', (event) => {
      if (event === null) return
      clearTimeout(timer)
      resolve(event)
    })
  })
}

async function expectClose () {
  const event = await firstServerClose(timeoutMs)
  emit({ closeCode: event.code, closeReason: event.reason, synced: provider.synced })
  await finish(0)
}

async function handle (cmd) {
  switch (cmd.op) {
    case 'insert':
      insert(cmd.text, cmd.at)
      return { op: 'insert', ...snapshot() }
    case 'dump':
      return { op: 'dump', ...snapshot() }
    case 'wait': {
      const wanted = expectation({ expect: cmd.expect ?? undefined, contains: cmd.expect_contains ?? [] })
      await waitFor(wanted.check, cmd.timeout_ms ?? timeoutMs, wanted.describe)
      return { op: 'wait', ...snapshot() }
    }
    case 'quit':
      emit({ op: 'quit', ...snapshot() })
      await finish(0)
      return null
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}`)
  }
}

async function interactive () {
  const synced = expectation({ expect: undefined, contains: [] })
  await waitFor(synced.check, timeoutMs, synced.describe)
  emit({ event: 'ready', ...snapshot() })
  // Commands run one at a time, in order, so replies line up with requests.
  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    if (!line.trim()) continue
    let cmd
    try {
      cmd = JSON.parse(line)
      const reply = await handle(cmd)
      if (reply) emit(reply)
    } catch (err) {
      emit({ op: cmd?.op ?? null, error: err.message })
    }
  }
  await finish(0) // stdin closed: the test is gone
}

const main = opts.interactive ? interactive : opts['expect-close'] ? expectClose : oneShot
main().catch((err) => fail(err.message))
