// The history panel: the session's commits (auto-commits and manual ones), each commit's diff
// against the live text, and restore (applied by the server as CRDT edits, so every open
// editor shows the restored text at once).
import { h, fill, ago, toast } from './dom.js'
import { history as historyApi } from './api.js'

const POLL_MS = 4000

function diffView (diff) {
  if (!diff.trim()) return h('p', { class: 'empty' }, 'No difference: the file is as it was in this commit.')
  return h('pre', { class: 'diff' }, diff.replace(/\n$/, '').split('\n').map((line) => {
    const kind = line.startsWith('@@') ? 'hunk'
      : line.startsWith('+++') || line.startsWith('---') ? 'head'
        : line.startsWith('+') ? 'add'
          : line.startsWith('-') ? 'del' : 'ctx'
    return h('div', { class: `line ${kind}` }, line || ' ')
  }))
}

export class HistoryPanel {
  /**
   * @param {object} o
   * @param {HTMLElement} o.el
   * @param {string} o.session
   * @param {boolean} o.canWrite the token may restore and commit
   * @param {() => string | null} o.currentFile
   */
  constructor ({ el, session, canWrite, currentFile }) {
    Object.assign(this, { el, session, canWrite, currentFile })
    this.commits = null
    this.problem = null
    this.selected = null // sha
    this.diffs = new Map() // `${sha}:${path}` → diff text | Error
    this.showing = null // path whose diff is open
    this.timer = null
    this.listEl = h('div', { class: 'commits' })
    const refresh = h('button', { class: 'icon', title: 'Refresh', 'aria-label': 'Refresh history', onclick: () => this.load() }, '⟳')
    this.commitButton = canWrite ? h('button', { class: 'small', onclick: () => this.commitNow() }, 'Commit now') : null
    fill(el, h('div', { class: 'pane-head' }, h('span', {}, 'History'), h('span', { class: 'spacer' }), this.commitButton, refresh), this.listEl)
  }

  open () {
    this.el.hidden = false
    this.load()
    clearInterval(this.timer)
    this.timer = setInterval(() => this.load(), POLL_MS)
  }

  close () {
    this.el.hidden = true
    clearInterval(this.timer)
  }

  get isOpen () { return !this.el.hidden }

  /** Fetch the commits and the open diff ("to now": it changes with every edit); redraw only
   * when something changed, so a poll never disturbs someone reading or selecting. */
  async load () {
    const before = JSON.stringify([this.commits, this.problem, this.openDiff()])
    try {
      const { commits } = await historyApi.list(this.session)
      this.commits = commits
      this.problem = null
      if (!commits.length && this.isGit === undefined) this.isGit = await historyApi.isGit(this.session)
      if (this.selected && this.showing) await this.fetchDiff(this.selected, this.showing)
    } catch (e) {
      this.problem = `History is unavailable: ${e.message}`
    }
    if (JSON.stringify([this.commits, this.problem, this.openDiff()]) !== before) this.render()
  }

  openDiff () {
    const diff = this.selected && this.showing ? this.diffs.get(`${this.selected}:${this.showing}`) : null
    return diff instanceof Error ? diff.message : diff ?? null
  }

  async fetchDiff (sha, path) {
    try {
      this.diffs.set(`${sha}:${path}`, (await historyApi.diff(this.session, sha, path)).diff)
    } catch (e) {
      this.diffs.set(`${sha}:${path}`, e)
    }
  }

  async commitNow () {
    try {
      const done = await historyApi.commit(this.session)
      toast(done.commit ? `Committed ${done.commit.slice(0, 8)} (${done.changed.length} file${done.changed.length === 1 ? '' : 's'})` : 'Nothing changed since the last commit')
      this.load()
    } catch (e) {
      toast(`Commit failed: ${e.message}`, 'error')
    }
  }

  async showDiff (sha, path) {
    this.showing = this.showing === path ? null : path
    this.render()
    if (this.showing) {
      await this.fetchDiff(sha, path)
      this.render()
    }
  }

  async restore (sha, path) {
    const what = path ?? 'every file of this commit'
    if (!confirm(`Restore ${what} as of ${sha.slice(0, 8)}? The current text is replaced for everyone (it stays in the history).`)) return
    try {
      const done = await historyApi.restore(this.session, sha, path)
      toast(`Restored ${done.restored.join(', ') || 'nothing'} from ${sha.slice(0, 8)}`)
      for (const key of [...this.diffs.keys()]) if (key.startsWith(`${sha}:`)) this.diffs.delete(key)
      this.load()
    } catch (e) {
      toast(`Restore failed: ${e.message}`, 'error')
    }
  }

  render () {
    if (this.commitButton) this.commitButton.hidden = this.isGit === false
    if (this.problem) return fill(this.listEl, h('p', { class: 'problem' }, this.problem))
    if (!this.commits) return fill(this.listEl, h('p', { class: 'empty' }, 'Loading…'))
    if (!this.commits.length) {
      return fill(this.listEl, h('p', { class: 'empty' }, this.isGit === false
        ? 'This session keeps no history: only sessions made with "Create" on the start page (or imported from git) are committed.'
        : 'No commits yet. Edits are committed by themselves once the session has been quiet for a while (COOLDOWN_MS, 5 minutes unless the server says otherwise); "Commit now" commits at once.'))
    }
    fill(this.listEl, this.commits.map((c) => {
      const open = c.sha === this.selected
      const people = [c.author, ...(c.coauthors ?? [])].filter(Boolean).join(', ')
      const head = h('button', {
        class: 'commit-head',
        'aria-expanded': String(open),
        onclick: () => { this.selected = open ? null : c.sha; this.showing = null; this.render() }
      },
      h('span', { class: 'message' }, (c.message ?? '').split('\n')[0]),
      h('span', { class: 'meta' }, h('code', {}, c.sha.slice(0, 8)), ` ${people} · `, h('time', { datetime: c.time, title: c.time }, ago(c.time))))
      if (!open) return h('div', { class: 'commit', 'data-sha': c.sha }, head)
      const current = this.currentFile()
      const files = [...(c.files ?? [])].sort((a, b) => (b === current) - (a === current) || a.localeCompare(b))
      return h('div', { class: 'commit open', 'data-sha': c.sha }, head,
        h('ul', { class: 'commit-files' }, files.map((path) => {
          const diff = this.showing === path ? this.diffs.get(`${c.sha}:${path}`) : undefined
          return h('li', { 'data-path': path },
            h('div', { class: 'file-line' },
              h('span', { class: 'path' }, path),
              h('button', { class: 'small', onclick: () => this.showDiff(c.sha, path) }, this.showing === path ? 'Hide diff' : 'Diff'),
              this.canWrite ? h('button', { class: 'small', onclick: () => this.restore(c.sha, path) }, 'Restore') : null),
            this.showing === path
              ? (diff === undefined ? h('p', { class: 'empty' }, 'Loading…')
                  : diff instanceof Error ? h('p', { class: 'problem' }, diff.message)
                    : h('div', {}, h('p', { class: 'diff-note' }, `Changes from ${c.sha.slice(0, 8)} to now`), diffView(diff)))
              : null)
        })),
        this.canWrite && files.length > 1
          ? h('button', { class: 'small restore-all', onclick: () => this.restore(c.sha, null) }, `Restore all ${files.length} files`)
          : null)
    }))
  }
}
