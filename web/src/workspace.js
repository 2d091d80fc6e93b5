// A session's workspace (/s/{session}[/{path}]): the file tree, the editor of one file, who is
// here, the connection's state, and the history panel.
import * as Y from 'yjs'
import { h, fill, toast } from './dom.js'
import { files as filesApi, isReadOnly } from './api.js'
import { askForToken } from './auth.js'
import { Connection } from './connection.js'
import { openEditor } from './editor.js'
import { FileTree } from './tree.js'
import { HistoryPanel } from './history.js'
import { connect } from './providers.js'
import { languageName } from './languages.js'
import { others, rename, renderPeople } from './presence.js'
import { workspaceUrl } from './home.js'

const STATE_LABELS = { connected: 'Connected', connecting: 'Connecting…', reconnecting: 'Reconnecting…', refused: 'Refused' }

/** The session and file a workspace URL names, or null. */
export function parseLocation (pathname) {
  const m = /^\/s\/([^/]+)(?:\/(.*))?$/.exec(pathname)
  if (!m) return null
  const decode = (s) => { try { return decodeURIComponent(s) } catch { return s } }
  const path = m[2] ? m[2].split('/').map(decode).join('/') : null
  return { session: decode(m[1]), path: path || null }
}

export function workspace (root, { session, path, who, identity }) {
  let me = identity
  const readOnly = isReadOnly(who, session)
  const canEdit = who.api && !readOnly

  const status = h('span', { class: 'status', 'data-state': 'connecting', role: 'status' }, STATE_LABELS.connecting)
  const people = h('div', { class: 'people', 'aria-label': 'People in this session' })
  const banner = h('div', { class: 'banner', hidden: true, role: 'alert' })
  const fileTitle = h('span', { class: 'crumb file' })
  const sidebar = h('aside', { class: 'sidebar' })
  const editorHead = h('div', { class: 'editor-head' })
  const editorEl = h('div', { class: 'editor' })
  const historyEl = h('aside', { class: 'history-pane', hidden: true, 'aria-label': 'History' })
  const historyButton = who.api
    ? h('button', { class: 'toggle', 'aria-pressed': 'false', onclick: () => toggleHistory() }, 'History')
    : null
  fill(root, h('div', { class: 'workspace' },
    h('header', { class: 'topbar' },
      h('a', { class: 'brand', href: '/', title: 'All sessions' }, 'collab'),
      h('span', { class: 'crumb session' }, session),
      fileTitle,
      status,
      readOnly ? h('span', { class: 'badge readonly', title: 'Your token does not allow editing this session' }, 'read-only') : null,
      h('span', { class: 'spacer' }),
      people,
      historyButton),
    banner,
    h('div', { class: 'panes' },
      sidebar,
      h('main', { class: 'editor-pane' }, editorHead, editorEl),
      historyEl)))

  // --- connection state -------------------------------------------------------------------
  let asked = false
  const connection = new Connection((c) => {
    const { state, message, code } = c.summary
    status.dataset.state = state
    status.textContent = STATE_LABELS[state]
    banner.hidden = !message
    banner.dataset.state = state
    if (code === 4401) {
      fill(banner, message, ' ', h('button', { class: 'small', onclick: () => askForToken(message) }, 'Enter a token'))
      if (!asked) { asked = true; askForToken(message) }
    } else {
      fill(banner, message)
    }
  })

  // --- the index: files, and who is here ----------------------------------------------------
  const indexDoc = new Y.Doc()
  const index = connect(indexDoc, session, null)
  connection.watch('index', index)
  const files = indexDoc.getMap('files')
  const awareness = index.awareness
  const userField = () => ({ name: me.name, color: me.color, colorLight: me.colorLight })
  awareness.setLocalState({ user: userField(), file: path })

  let current = { path: null, editor: null }
  const tree = new FileTree({
    el: sidebar,
    files,
    session,
    canEdit,
    onOpen: (p) => open(p, { push: true }),
    onError: (text) => toast(text, 'error')
  })
  const history = who.api
    ? new HistoryPanel({ el: historyEl, session, canWrite: canEdit, currentFile: () => current.path })
    : null

  const showPeople = () => {
    const list = others(awareness)
    renderPeople(people, me, list, (name) => {
      me = rename(me, name)
      awareness.setLocalStateField('user', userField())
      current.editor?.setUser(me)
      showPeople()
    })
    tree.setPresence(list)
  }
  awareness.on('change', showPeople)
  showPeople()

  // --- the open file ------------------------------------------------------------------------
  function open (p, { push = false, replace = false } = {}) {
    if (p === current.path && current.editor) return
    current.editor?.destroy()
    connection.unwatch('file')
    current = { path: p, editor: null }
    tree.setCurrent(p)
    awareness.setLocalStateField('file', p)
    const url = workspaceUrl(session, p)
    if (push && url !== location.pathname) history_(url, 'push')
    else if (replace) history_(url, 'replace')
    document.title = p ? `${p} — ${session} — collab` : `${session} — collab`
    fileTitle.textContent = p ?? ''
    if (!p) {
      fill(editorHead)
      fill(editorEl, h('div', { class: 'placeholder' },
        h('p', {}, 'Open a file from the list', canEdit ? ', or create one with +.' : '.')))
      return
    }
    const meta = files.get(p)
    if (meta?.type === 'binary') {
      fill(editorHead, h('span', {}, p))
      fill(editorEl, h('div', { class: 'placeholder' }, h('p', {}, `${p} is a binary file${meta.size != null ? ` (${meta.size} bytes)` : ''}; it cannot be edited here.`)))
      return
    }
    fill(editorHead,
      h('span', { class: 'path' }, p),
      h('span', { class: 'lang' }, languageName(p) ?? 'plain text'),
      readOnly ? h('span', { class: 'badge readonly' }, 'read-only: your token does not allow editing') : null)
    editorEl.replaceChildren()
    current.editor = openEditor({ parent: editorEl, session, path: p, user: me, readOnly })
    connection.watch('file', current.editor.provider)
    if (!readOnly) current.editor.view.focus()
  }

  function history_ (url, how) {
    if (how === 'push') window.history.pushState(null, '', url)
    else window.history.replaceState(null, '', url)
  }

  window.addEventListener('popstate', () => {
    const where = parseLocation(location.pathname)
    if (where?.session === session) open(where.path)
    else location.reload()
  })

  // A file opened by URL is created (empty) when it does not exist yet, once the index has
  // synced (so "absent" means absent on the server, not "not loaded yet").
  let created = false
  index.on('sync', (synced) => {
    if (!synced || created) return
    created = true
    const p = current.path
    if (p && !files.has(p) && canEdit) {
      filesApi.put(session, p, '').catch((e) => toast(`Cannot create ${p}: ${e.message}`, 'error'))
    }
  })

  // Follow the open file when someone renames it; say so when someone deletes it. A rename
  // shows in the index as one path leaving and another arriving with the same metadata.
  let lost = null
  files.observe((event) => {
    const p = current.path
    const added = [...event.changes.keys].filter(([, c]) => c.action === 'add').map(([k]) => k)
    if (lost && added.length) {
      const to = added.find((k) => files.get(k)?.created === lost.meta?.created) ?? (added.length === 1 ? added[0] : null)
      if (to) {
        clearTimeout(lost.timer)
        toast(`${lost.path} was renamed to ${to}`)
        lost = null
        open(to, { replace: true })
        return
      }
    }
    if (!p || !event.keysChanged.has(p) || files.has(p)) return
    const meta = event.changes.keys.get(p)?.oldValue
    const to = added.find((k) => files.get(k)?.created === meta?.created) ?? (added.length === 1 ? added[0] : null)
    if (to) {
      toast(`${p} was renamed to ${to}`)
      open(to, { replace: true })
      return
    }
    // Not (yet) a rename: wait a moment for the new path to arrive in a later update.
    lost = {
      path: p,
      meta,
      timer: setTimeout(() => {
        lost = null
        if (current.path === p && !files.has(p)) {
          toast(`${p} was deleted`)
          open(null, { replace: true })
        }
      }, 600)
    }
  })

  function toggleHistory () {
    if (history.isOpen) history.close()
    else history.open()
    historyButton.setAttribute('aria-pressed', String(history.isOpen))
  }

  open(path)
}
