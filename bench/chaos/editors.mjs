#!/usr/bin/env node
// The chaos workload's JavaScript editors: unmodified y-websocket WebsocketProviders under Node,
// several in one process (each with its own Y.Doc and provider), driven by bench/chaos/workload.py.
//
//   node bench/chaos/editors.mjs --config '{"seed":N,"interval_ms":M,
//     "clients":[{"client","router","url","room","path"}]}'
//
// stdout, one JSON object a line:
//   events   {"t","client","ev":"connected"|"disconnected"|"synced"|"insert", ...}
//            disconnected carries code and reason (null, "local ..." when y-websocket closed the
//            socket itself: its 30 s silence watchdog); insert carries path and token.
//   replies  {"op":"state","id","clients":{client:{connected,synced,missing,sha1}}} (missing:
//            how many of its own tokens its text lacks)
//            {"op":"final","id","clients":{client:{connected,synced,text}}}
// stdin, one JSON command a line: {"op":"stop"} (no new tokens), {"op":"state","id"},
//   {"op":"final","id"}, {"op":"quit"}. End of stdin is a quit.
//
// Packages come from tests/js (one lock file for every Node dependency of the project). The
// socket class is the one Node-specific bit: `ws` with a handshake timeout, because a connect
// whose SYN is dropped by a partition otherwise waits for the kernel (minutes), which would
// measure Node's defaults instead of the server's recovery. y-websocket itself is unmodified;
// disableBc keeps editors of one room in this one process from syncing with each other
// through a BroadcastChannel instead of through the server.
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'

const require = createRequire(new URL('../../tests/js/package.json', import.meta.url))
const WebSocket = require('ws')
const { WebsocketProvider } = require('y-websocket')
const Y = require('yjs')

const HANDSHAKE_TIMEOUT_MS = 5000

const { values } = parseArgs({ options: { config: { type: 'string' } } })
if (!values.config) {
  process.stderr.write('usage: editors.mjs --config JSON\n')
  process.exit(2)
}
const config = JSON.parse(values.config)

class TimedWebSocket extends WebSocket {
  constructor (url, protocols) {
    super(url, protocols, { handshakeTimeout: HANDSHAKE_TIMEOUT_MS })
  }
}

/** mulberry32: a small seeded generator, so a seed replays the same positions and delays. */
function generator (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

let stopped = false

function startEditor (spec, index) {
  const doc = new Y.Doc()
  const text = doc.getText('content')
  const provider = new WebsocketProvider(spec.url, spec.room, doc, {
    WebSocketPolyfill: TimedWebSocket,
    disableBc: true
  })
  const random = generator((config.seed * 1000003 + index * 7919) >>> 0)
  const editor = { spec, doc, text, provider, count: 0, own: new Set(), lastClose: null, timer: null }
  const event = (ev, fields = {}) => emit({ t: Date.now() / 1000, client: spec.client, ev, ...fields })

  provider.on('connection-close', (closeEvent) => {
    editor.lastClose = closeEvent
      ? { code: closeEvent.code, reason: closeEvent.reason || '' }
      : { code: null, reason: 'local close (y-websocket watchdog or destroy)' }
  })
  provider.on('status', ({ status }) => {
    if (status === 'connected') {
      editor.lastClose = null
      event('connected', { router: spec.router })
    } else if (status === 'disconnected') {
      const close = editor.lastClose ?? { code: null, reason: '' }
      event('disconnected', close)
    }
  })
  provider.on('sync', (isSynced) => {
    if (isSynced) event('synced')
  })

  // A token goes at a boundary of this editor's own view: the start, after a newline, or the
  // end. Every token ends with a newline, so no insert (here or anywhere) can land inside one.
  const insert = () => {
    const current = text.toString()
    let at = current.length
    if (random() < 0.5) {
      const boundaries = [0]
      for (let i = 0; i < current.length; i++) if (current[i] === '\n') boundaries.push(i + 1)
      at = boundaries[Math.floor(random() * boundaries.length)]
    }
    editor.count += 1
    const token = `<${spec.client}-${editor.count}>`
    text.insert(at, token + '\n')
    editor.own.add(token)
    event('insert', { path: spec.path, token })
  }
  const schedule = () => {
    if (stopped) return
    editor.timer = setTimeout(() => {
      if (stopped) return
      insert()
      schedule()
    }, config.interval_ms * (0.5 + random()))
  }
  schedule()
  return editor
}

const editors = config.clients.map(startEditor)

const TOKEN = /<[^<>\s]+>/g

function state (withText) {
  const clients = {}
  for (const { spec, text, provider, own } of editors) {
    const value = text.toString()
    const entry = { connected: provider.wsconnected, synced: provider.synced }
    if (withText) entry.text = value
    else {
      const seen = new Set(value.match(TOKEN) ?? [])
      entry.missing = [...own].filter((token) => !seen.has(token)).length
      entry.sha1 = createHash('sha1').update(value, 'utf8').digest('hex')
    }
    clients[spec.client] = entry
  }
  return clients
}

function quit () {
  stopped = true
  for (const { provider, doc, timer } of editors) {
    clearTimeout(timer)
    provider.destroy()
    doc.destroy()
  }
  process.exit(0)
}

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  if (!line.trim()) continue
  const cmd = JSON.parse(line)
  if (cmd.op === 'stop') {
    stopped = true
    for (const editor of editors) clearTimeout(editor.timer)
    emit({ op: 'stop' })
  } else if (cmd.op === 'state') {
    emit({ op: 'state', id: cmd.id, clients: state(false) })
  } else if (cmd.op === 'final') {
    emit({ op: 'final', id: cmd.id, clients: state(true) })
  } else if (cmd.op === 'quit') {
    quit()
  } else {
    process.stderr.write(`editors.mjs: unknown op ${JSON.stringify(cmd.op)}\n`)
  }
}
quit()
