#!/usr/bin/env node
// Hocuspocus with no extensions: the Node reference point of the benchmark.
//   node bench/servers/hocuspocus.mjs --port P [--host 127.0.0.1]
// Packages come from tests/js (one lock file for every Node dependency of the project).
// Defaults kept on purpose: flushDelay 0 (updates arriving in one event-loop turn are merged into
// one broadcast), ws without permessage-deflate (the `ws` server default).
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'

const require = createRequire(new URL('../../tests/js/package.json', import.meta.url))
const { Server } = require('@hocuspocus/server')

const { values } = parseArgs({
  options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' } }
})
if (!values.port) {
  process.stderr.write('usage: hocuspocus.mjs --port P [--host H]\n')
  process.exit(2)
}

const server = new Server({ port: Number(values.port), address: values.host, quiet: true })
await server.listen()
process.stderr.write(`hocuspocus listening on ${values.host}:${values.port}\n`)
