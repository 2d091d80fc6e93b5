// Syntax highlighting by file type. Each language is its own chunk of the build, fetched the
// first time a file of that type opens.
const LOADERS = {
  python: () => import('@codemirror/lang-python').then((m) => m.python()),
  js: () => import('@codemirror/lang-javascript').then((m) => m.javascript()),
  jsx: () => import('@codemirror/lang-javascript').then((m) => m.javascript({ jsx: true })),
  ts: () => import('@codemirror/lang-javascript').then((m) => m.javascript({ typescript: true })),
  tsx: () => import('@codemirror/lang-javascript').then((m) => m.javascript({ typescript: true, jsx: true })),
  json: () => import('@codemirror/lang-json').then((m) => m.json()),
  markdown: () => import('@codemirror/lang-markdown').then((m) => m.markdown()),
  html: () => import('@codemirror/lang-html').then((m) => m.html()),
  css: () => import('@codemirror/lang-css').then((m) => m.css()),
  rust: () => import('@codemirror/lang-rust').then((m) => m.rust()),
  go: () => import('@codemirror/lang-go').then((m) => m.go()),
  cpp: () => import('@codemirror/lang-cpp').then((m) => m.cpp()),
  java: () => import('@codemirror/lang-java').then((m) => m.java()),
  sql: () => import('@codemirror/lang-sql').then((m) => m.sql()),
  yaml: () => import('@codemirror/lang-yaml').then((m) => m.yaml())
}

const BY_EXTENSION = {
  py: 'python', pyi: 'python',
  js: 'js', mjs: 'js', cjs: 'js', jsx: 'jsx',
  ts: 'ts', mts: 'ts', cts: 'ts', tsx: 'tsx',
  json: 'json', jsonc: 'json',
  md: 'markdown', markdown: 'markdown',
  html: 'html', htm: 'html', svelte: 'html', vue: 'html',
  css: 'css', scss: 'css',
  rs: 'rust',
  go: 'go',
  c: 'cpp', h: 'cpp', cc: 'cpp', cpp: 'cpp', cxx: 'cpp', hpp: 'cpp', hh: 'cpp',
  java: 'java',
  sql: 'sql',
  yaml: 'yaml', yml: 'yaml'
}

/** The language's name for a path ('python', 'js', …), or null for plain text. */
export function languageName (path) {
  const base = path.split('/').pop().toLowerCase()
  const dot = base.lastIndexOf('.')
  return dot > 0 ? BY_EXTENSION[base.slice(dot + 1)] ?? null : null
}

/** A CodeMirror extension for the path's language, or null for plain text. */
export async function languageFor (path) {
  const name = languageName(path)
  return name ? LOADERS[name]() : null
}
