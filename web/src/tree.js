// The file tree of a session, drawn from its index document (Y.Map "files": path → metadata),
// so it follows every change whoever makes it (either protocol, the HTTP API). The index is
// server-owned: create, rename and delete go through the HTTP API, never into the map.
import { h, fill } from './dom.js'
import { avatar } from './presence.js'
import { files as filesApi } from './api.js'

/** Paths → nested folders: {dirs: Map<name, node>, files: [[name, path, meta]]}. */
function nest (entries) {
  const root = { dirs: new Map(), files: [] }
  for (const [path, meta] of entries) {
    const parts = path.split('/')
    let node = root
    for (const part of parts.slice(0, -1)) {
      if (!node.dirs.has(part)) node.dirs.set(part, { dirs: new Map(), files: [] })
      node = node.dirs.get(part)
    }
    node.files.push([parts[parts.length - 1], path, meta])
  }
  return root
}

export class FileTree {
  /**
   * @param {object} o
   * @param {HTMLElement} o.el
   * @param {import('yjs').Map<any>} o.files
   * @param {string} o.session
   * @param {boolean} o.canEdit the API is there and the token may write
   * @param {(path: string) => void} o.onOpen
   * @param {(message: string) => void} o.onError
   */
  constructor ({ el, files, session, canEdit, onOpen, onError }) {
    Object.assign(this, { el, files, session, canEdit, onOpen, onError })
    this.current = null
    this.presence = new Map() // path → [user]
    this.collapsed = new Set()
    this.editing = null // {kind: 'new'} | {kind: 'rename', path}
    this.listEl = h('div', { class: 'tree', role: 'tree', 'aria-label': 'Files' })
    const newButton = canEdit
      ? h('button', { class: 'icon', title: 'New file', 'aria-label': 'New file', onclick: () => this.edit({ kind: 'new' }) }, '+')
      : null
    fill(el, h('div', { class: 'pane-head' }, h('span', {}, 'Files'), newButton), this.listEl)
    files.observe(() => this.render())
    this.render()
  }

  setCurrent (path) {
    this.current = path
    this.render()
  }

  setPresence (people) {
    this.presence = new Map()
    for (const { user, file } of people) {
      if (file) this.presence.set(file, [...(this.presence.get(file) ?? []), user])
    }
    this.render()
  }

  toggle (dir) {
    if (!this.collapsed.delete(dir)) this.collapsed.add(dir)
    this.render()
  }

  edit (editing) {
    this.editing = { ...editing, fresh: true }
    this.render()
  }

  render () {
    const entries = [...this.files.entries()].sort(([a], [b]) => a.localeCompare(b))
    const rows = []
    if (this.editing?.kind === 'new') {
      const dir = this.current?.includes('/') ? this.current.slice(0, this.current.lastIndexOf('/') + 1) : ''
      this.editing.row ??= this.input(dir, 'new file path, e.g. src/app.py', (path) => this.create(path))
      rows.push(this.editing.row)
    }
    this.rows(nest(entries), '', 0, rows)
    if (!entries.length && !this.editing) {
      rows.push(h('p', { class: 'empty' }, this.canEdit ? 'No files yet. Create one with +.' : 'No files yet.'))
    }
    const focused = this.listEl.contains(document.activeElement)
    const focusedPath = focused ? document.activeElement.closest('.row.file')?.dataset.path : null
    fill(this.listEl, rows)
    if (focusedPath) this.listEl.querySelector(`.row.file[data-path="${CSS.escape(focusedPath)}"]`)?.focus()
    // Re-rendering (someone else's change) keeps the row being edited, with what was typed.
    const input = this.listEl.querySelector('input')
    if (input && (this.editing.fresh || focused)) input.focus()
    if (this.editing) this.editing.fresh = false
  }

  rows (node, prefix, depth, out) {
    for (const [name, child] of [...node.dirs.entries()].sort(([a], [b]) => a.localeCompare(b))) {
      const dir = prefix + name + '/'
      const open = !this.collapsed.has(dir)
      out.push(h('div', {
        class: 'row dir',
        role: 'treeitem',
        'aria-expanded': String(open),
        style: `--depth:${depth}`,
        tabindex: '0',
        onclick: () => this.toggle(dir),
        onkeydown: (e) => { if (e.key === 'Enter') this.toggle(dir) }
      }, h('span', { class: 'twisty' }, open ? '▾' : '▸'), h('span', { class: 'label' }, name)))
      if (open) this.rows(child, dir, depth + 1, out)
    }
    for (const [name, path, meta] of node.files) {
      if (this.editing?.kind === 'rename' && this.editing.path === path) {
        this.editing.row ??= this.input(path, 'new path', (to) => this.rename(path, to), depth)
        out.push(this.editing.row)
        continue
      }
      const binary = meta?.type === 'binary'
      const here = this.presence.get(path) ?? []
      out.push(h('div', {
        class: `row file${path === this.current ? ' current' : ''}${binary ? ' binary' : ''}`,
        role: 'treeitem',
        'aria-selected': String(path === this.current),
        'data-path': path,
        style: `--depth:${depth}`,
        title: path,
        tabindex: '0',
        onclick: () => this.onOpen(path),
        onkeydown: (e) => { if (e.key === 'Enter' && e.target === e.currentTarget) this.onOpen(path) }
      },
      h('span', { class: 'label' }, name),
      h('span', { class: 'here' }, here.map((u) => avatar(u, `${u.name} is here`))),
      this.canEdit
        ? h('span', { class: 'actions' },
          h('button', { class: 'icon', title: `Rename ${path}`, 'aria-label': `Rename ${path}`, onclick: (e) => { e.stopPropagation(); this.edit({ kind: 'rename', path }) } }, '✎'),
          h('button', { class: 'icon', title: `Delete ${path}`, 'aria-label': `Delete ${path}`, onclick: (e) => { e.stopPropagation(); this.remove(path) } }, '×'))
        : null))
    }
  }

  input (value, placeholder, submit, depth = 0) {
    const input = h('input', { class: 'path-input', value, placeholder, 'aria-label': placeholder, spellcheck: 'false' })
    const done = () => { this.editing = null; this.render() }
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') done()
      if (e.key !== 'Enter') return
      const path = input.value.trim().replace(/^\/+/, '')
      if (!path || path.endsWith('/')) return
      this.editing = null
      submit(path)
      this.render()
    })
    input.addEventListener('blur', () => setTimeout(() => { if (this.editing && document.activeElement !== input) done() }, 150))
    return h('div', { class: 'row editing', style: `--depth:${depth}` }, input)
  }

  async create (path) {
    if (this.files.has(path)) return this.onOpen(path)
    try {
      await filesApi.put(this.session, path, '')
      this.onOpen(path)
    } catch (e) {
      this.onError(`Cannot create ${path}: ${e.message}`)
    }
  }

  async rename (from, to) {
    if (from === to) return
    try {
      await filesApi.rename(this.session, from, to)
      if (this.current === from) this.onOpen(to)
    } catch (e) {
      this.onError(`Cannot rename ${from}: ${e.message}`)
    }
  }

  async remove (path) {
    if (!confirm(`Delete ${path}? Everyone editing it loses it.`)) return
    try {
      await filesApi.remove(this.session, path)
    } catch (e) {
      this.onError(`Cannot delete ${path}: ${e.message}`)
    }
  }
}
