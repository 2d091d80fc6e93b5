#!/usr/bin/env node
// Replays an editing trace through unmodified y-websocket providers (bench/trace.py drives it).
//
// Type:  node bench/trace_typist.mjs type --url URL --session S --trace FILE [--times N]
//          For each file i of N (S/file1.txt .. S/fileN.txt): a typist provider types every
//          transaction of the trace into the Y.Text "content" of its document, and a second
//          provider (its own Y.Doc) watches. Files are typed one after another.
//          Lines on stdout (JSON): {"event":"ready"} once all 2N providers synced;
//          {"event":"progress",...} every 2 s; {"event":"typed", replay_ms, exact_typist,
//          exact_watcher, encoded_bytes, ...} once every watcher's text equals endContent;
//          then the providers stay connected until stdin closes or says "quit".
// Fetch: node bench/trace_typist.mjs fetch --url URL --session S --trace FILE [--times N]
//          A fresh client: opens all N files at once and prints {"sync_ms", "exact",
//          "encoded_bytes"} once each is synced and its text equals endContent.
// Both:  --timeout-ms bounds every wait (default 120000); a timeout prints what it saw
//          ("exact": false, "error") and exits 1.
//
// "As fast as the server keeps up": the typist marks its progress in its awareness state every
// --mark transactions, and stops typing while it is more than --window transactions ahead of
// the last mark the watcher has seen through the server (awareness is relayed in order with
// the updates by both servers measured). The providers never share a BroadcastChannel
// (disableBc), so every update the watcher gets has gone through the server.
import { createRequire } from 'node:module'
import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'

const require = createRequire(new URL('../tests/js/package.json', import.meta.url))
const WebSocket = require('ws')
const { WebsocketProvider } = require('y-websocket')
const Y = require('yjs')

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: 'string' },
    session: { type: 'string' },
    trace: { type: 'string' },
    times: { type: 'string', default: '1' },
    'timeout-ms': { type: 'string', default: '120000' },
    window: { type: 'string', default: '1024' },
    mark: { type: 'string', default: '64' }
  }
})
const mode = positionals[0]
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const fail = (message) => {
  process.stderr.write(`trace_typist.mjs: ${message}\n`)
  process.exit(2)
}
if (!['type', 'fetch'].includes(mode) || !opts.url || !opts.session || !opts.trace) {
  fail('usage: trace_typist.mjs type|fetch --url URL --session S --trace FILE [--times N]')
}
const times = Number(opts.times)
const timeoutMs = Number(opts['timeout-ms'])
const windowTxns = Number(opts.window)
const mark = Number(opts.mark)

function loadTrace (path) {
  let raw = readFileSync(path)
  if (raw[0] === 0x1f && raw[1] === 0x8b) raw = gunzipSync(raw)
  return JSON.parse(raw.toString('utf8'))
}

const trace = loadTrace(opts.trace)
const files = Array.from({ length: times }, (_, i) => `file${i + 1}.txt`)
// Trace positions count code points; Y.Text counts UTF-16 units. They differ only if some
// text lies past U+FFFF, and only then is the (slow) conversion needed.
const astral = /[\u{10000}-\u{10FFFF}]/u
const needsConversion = astral.test(trace.startContent) ||
  trace.txns.some((txn) => txn.patches.some((p) => astral.test(p[2])))

function connect (file) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(opts.url, `${opts.session}/${file}`, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true
  })
  return { doc, text: doc.getText('content'), provider }
}

/** Resolves once `check()` holds (tested on every doc, awareness and sync event of `peers`). */
function waitFor (peers, check, ms, what) {
  return new Promise((resolve, reject) => {
    if (check()) return resolve()
    const tryIt = () => {
      if (!check()) return
      cleanup()
      resolve()
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`timeout after ${ms} ms waiting for ${what()}`))
    }, ms)
    const cleanup = () => {
      clearTimeout(timer)
      for (const p of peers) {
        p.doc.off('update', tryIt)
        p.provider.off('sync', tryIt)
        p.provider.awareness.off('change', tryIt)
      }
    }
    for (const p of peers) {
      p.doc.on('update', tryIt)
      p.provider.on('sync', tryIt)
      p.provider.awareness.on('change', tryIt)
    }
  })
}

function toUnits (text, pos) {
  let units = 0
  let points = 0
  for (const char of text) {
    if (points === pos) break
    units += char.length
    points += 1
  }
  return units
}

function apply (text, patches) {
  for (const [pos, del, ins] of patches) {
    let at = pos
    let length = del
    if (needsConversion) {
      const current = text.toString()
      at = toUnits(current, pos)
      length = toUnits(current, pos + del) - at
    }
    if (length > 0) text.delete(at, length)
    if (ins.length > 0) text.insert(at, ins)
  }
}

const endLength = trace.endContent.length
// Y.Text's length is O(1): compare whole texts only when the lengths agree.
const isEnd = (p) => p.text.length === endLength && p.text.toString() === trace.endContent
const encodedBytes = (peers) => peers.reduce((n, p) => n + Y.encodeStateAsUpdate(p.doc).length, 0)
const allSynced = (peers) => () => peers.every((p) => p.provider.synced)

async function typeAll () {
  const typists = files.map(connect)
  const watchers = files.map(connect)
  const everyone = [...typists, ...watchers]
  await waitFor(everyone, allSynced(everyone), timeoutMs, () => 'every provider to sync')
  emit({ event: 'ready', files, needs_conversion: needsConversion })
  const total = trace.txns.length
  const perFile = []
  let lastProgress = performance.now()
  const started = performance.now()
  emit({ event: 'typing' })
  for (let f = 0; f < files.length; f++) {
    const typist = typists[f]
    const watcher = watchers[f]
    const id = typist.doc.clientID
    const seen = () => watcher.provider.awareness.getStates().get(id)?.typed ?? 0
    const fileStart = performance.now()
    if (trace.startContent) typist.text.insert(0, trace.startContent)
    for (let i = 0; i < total; i++) {
      typist.doc.transact(() => apply(typist.text, trace.txns[i].patches))
      if ((i + 1) % mark !== 0 && i + 1 !== total) continue
      typist.provider.awareness.setLocalStateField('typed', i + 1)
      const floor = i + 1 - windowTxns
      if (seen() < floor) {
        await waitFor([watcher], () => seen() >= floor, timeoutMs,
          () => `the watcher to see transaction ${floor} of ${files[f]} (it saw ${seen()})`)
      }
      await new Promise((resolve) => setImmediate(resolve)) // let the sockets breathe
      if (performance.now() - lastProgress > 2000) {
        lastProgress = performance.now()
        emit({ event: 'progress', file: f + 1, files: files.length, typed: i + 1, of: total })
      }
    }
    await waitFor([watcher], () => isEnd(watcher), timeoutMs,
      () => `${files[f]}: the watcher's text to equal endContent (${watcher.text.length} of ${trace.endContent.length} characters)`)
    perFile.push(performance.now() - fileStart)
  }
  const replayMs = performance.now() - started
  emit({
    event: 'typed',
    replay_ms: replayMs,
    per_file_ms: perFile,
    keystrokes: total * files.length,
    exact_typist: typists.every(isEnd),
    exact_watcher: watchers.every(isEnd),
    encoded_bytes: encodedBytes(watchers),
    text_chars: trace.endContent.length * files.length
  })
  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) if (line.trim() === 'quit') break
  for (const p of everyone) p.provider.destroy()
  process.exit(0)
}

async function fetchAll () {
  const started = performance.now()
  const peers = files.map(connect)
  const exact = () => peers.every((p) => p.provider.synced && isEnd(p))
  try {
    await waitFor(peers, exact, timeoutMs, () => 'every file to sync with the expected text')
  } catch (err) {
    emit({ sync_ms: null, exact: false, error: err.message })
    process.exit(1)
  }
  const syncMs = performance.now() - started
  emit({ sync_ms: syncMs, exact: true, encoded_bytes: encodedBytes(peers) })
  for (const p of peers) p.provider.destroy()
  process.exit(0)
}

const main = mode === 'type' ? typeAll : fetchAll
main().catch((err) => {
  emit({ event: 'failed', error: err.message })
  process.stderr.write(`trace_typist.mjs: ${err.message}\n`)
  process.exit(1)
})
