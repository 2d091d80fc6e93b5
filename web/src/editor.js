// One file in CodeMirror 6, bound to its Yjs document (Y.Text "content") by y-codemirror.next:
// edits, undo of one's own edits, and the others' cursors and selections with their names.
import * as Y from 'yjs'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { Compartment, EditorState } from '@codemirror/state'
import {
  EditorView, crosshairCursor, drawSelection, dropCursor, highlightActiveLine,
  highlightActiveLineGutter, highlightSpecialChars, keymap, lineNumbers, rectangularSelection
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { bracketMatching, defaultHighlightStyle, indentOnInput, syntaxHighlighting } from '@codemirror/language'
import { highlightSelectionMatches, searchKeymap } from '@codemirror/search'
import { closeBrackets, closeBracketsKeymap } from '@codemirror/autocomplete'
import { connect } from './providers.js'
import { languageFor } from './languages.js'

const theme = EditorView.theme({
  '&': { height: '100%', fontSize: '14px' },
  '.cm-scroller': { fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace', lineHeight: '1.5' },
  '.cm-content': { padding: '18px 0 8px' }, // room for a name label above the first line
  // Remote names stay visible (y-codemirror.next shows them on hover only).
  '.cm-ySelectionInfo': { opacity: '1', fontFamily: 'system-ui, sans-serif', fontWeight: '600', borderRadius: '3px 3px 3px 0', padding: '0 4px', top: '-1.3em' },
  '&.cm-editor.cm-focused': { outline: 'none' }
})

/**
 * @param {object} o
 * @param {HTMLElement} o.parent
 * @param {string} o.session
 * @param {string} o.path
 * @param {{name: string, color: string, colorLight: string}} o.user
 * @param {boolean} o.readOnly
 */
export function openEditor ({ parent, session, path, user, readOnly }) {
  const doc = new Y.Doc()
  const provider = connect(doc, session, path)
  provider.awareness.setLocalStateField('user', { name: user.name, color: user.color, colorLight: user.colorLight })
  const ytext = doc.getText('content')
  const undoManager = new Y.UndoManager(ytext)
  const language = new Compartment()
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        highlightSpecialChars(),
        drawSelection(),
        dropCursor(),
        EditorState.allowMultipleSelections.of(true),
        indentOnInput(),
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        bracketMatching(),
        closeBrackets(),
        rectangularSelection(),
        crosshairCursor(),
        highlightActiveLine(),
        highlightSelectionMatches(),
        keymap.of([...closeBracketsKeymap, ...yUndoManagerKeymap, ...defaultKeymap, ...searchKeymap, indentWithTab]),
        EditorState.readOnly.of(readOnly),
        EditorView.contentAttributes.of({ 'aria-label': `Contents of ${path}` }),
        language.of([]),
        theme,
        yCollab(ytext, provider.awareness, { undoManager })
      ]
    })
  })
  let closed = false
  languageFor(path).then((extension) => {
    if (extension && !closed) view.dispatch({ effects: language.reconfigure(extension) })
  }).catch(() => {}) // plain text, then
  return {
    view,
    provider,
    setUser (next) {
      provider.awareness.setLocalStateField('user', { name: next.name, color: next.color, colorLight: next.colorLight })
    },
    destroy () {
      closed = true
      view.destroy()
      provider.destroy()
      undoManager.destroy()
      doc.destroy()
    }
  }
}
