// Builds the browser workspace into ../router/webapp (package data of the router; git-ignored):
//   index.html          the page for /, /s/{session} and /s/{session}/{path}
//   assets/*            scripts and styles named by content hash (cached for good), the
//                       language chunks loaded when a file of that type opens, licenses.txt
// Run by `make web` (after `npm ci`) and by the Dockerfile's node stage: `node build.mjs`.
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { basename, dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const out = resolve(here, process.env.WEBAPP_OUT ?? '../router/webapp')
const assets = join(out, 'assets')

rmSync(out, { recursive: true, force: true })
mkdirSync(assets, { recursive: true })

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { app: 'src/main.js' },
  bundle: true,
  splitting: true, // one chunk per language, loaded on demand
  format: 'esm',
  target: ['es2022'],
  minify: true,
  legalComments: 'none', // collected into licenses.txt below
  outdir: assets,
  entryNames: '[name]-[hash]',
  chunkNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  logLevel: 'warning',
})

const outputs = Object.entries(result.metafile.outputs)
// Dynamic imports are entry points too (the language chunks): the app is the one from main.js,
// and its CSS comes out beside it.
const app = outputs.find(([file, meta]) => meta.entryPoint === 'src/main.js' && file.endsWith('.js'))
const script = app && basename(app[0])
const style = app?.[1].cssBundle && basename(app[1].cssBundle)
if (!script || !style) throw new Error(`build produced no app script or style: ${outputs.map(([f]) => f)}`)

const page = readFileSync(join(here, 'src/index.html'), 'utf8')
  .replace('<!-- style -->', `<link rel="stylesheet" href="/assets/${style}">`)
  .replace('<!-- script -->', `<script type="module" src="/assets/${script}"></script>`)
writeFileSync(join(out, 'index.html'), page)

// What the bundle contains from node_modules, with each package's license text: the minified
// files drop the comments, and the wheel and the image ship them.
const packages = new Map()
for (const input of Object.keys(result.metafile.inputs)) {
  const parts = input.split('/')
  const at = parts.lastIndexOf('node_modules')
  if (at < 0) continue
  const name = parts[at + 1].startsWith('@') ? `${parts[at + 1]}/${parts[at + 2]}` : parts[at + 1]
  packages.set(name, join(here, ...parts.slice(0, at + 1), name))
}
const notices = [...packages.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, dir]) => {
  const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
  const file = ['LICENSE', 'LICENSE.md', 'LICENSE.txt', 'license'].map((f) => join(dir, f)).find(existsSync)
  const text = file ? readFileSync(file, 'utf8').trim() : `License: ${meta.license}`
  return `${name}@${meta.version} (${meta.license})\n\n${text}\n`
})
writeFileSync(join(assets, 'licenses.txt'), notices.join(`\n${'-'.repeat(78)}\n\n`))

const size = outputs.reduce((n, [, meta]) => n + meta.bytes, 0)
console.log(`web: built ${relative(process.cwd(), out)} (${outputs.length} files, ${Math.round(size / 1024)} KiB, ${packages.size} packages)`)
