"""A deterministic editing trace that types like a person, in the josephg/editing-traces format.

    python -m bench.trace_gen --keystrokes 260000 --seed 1 -o /tmp/gen.json.gz

The real traces (https://github.com/josephg/editing-traces, ``sequential_traces/``) are not
in this repository; this stands in for them in tests and wherever they cannot be fetched. One
transaction per keystroke, one patch each, as in ``automerge-paper``: runs of characters typed
at the cursor (words from a Zipf-weighted vocabulary, sentences, lines of 50-90 characters,
paragraphs), typos fixed with backspace at once, words rubbed out and retyped, and now and
then a jump elsewhere in the text (to a line or word boundary) to insert a phrase, backspace
a few words or delete a selection, before carrying on at the end. Text is ASCII, so code
points and UTF-16 positions agree. Same seed and count, same bytes.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.trace_format import Patch, Trace, save

_CONSONANTS = "bcdfghjklmnprstvwyz"
_VOWELS = "aeiou"
_NEIGHBOURS = "qwertyuiopasdfghjklzxcvbnm"  # a typo is a letter from this row-ish list


def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        words.add(
            "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
            + (rng.choice(_CONSONANTS) if rng.random() < 0.4 else "")
        )
    return sorted(words)


class Typist:
    """A person at a keyboard: ``keystrokes()`` yields one patch per key pressed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        # Common words are short: rank by length, with some noise; Zipf-like weights.
        words = sorted(_vocabulary(self.rng), key=lambda w: len(w) + 4 * self.rng.random())
        self.words = words
        self.cum_weights = list(itertools.accumulate(1 / (rank + 3) for rank in range(len(words))))
        self.doc = bytearray()
        self.cursor = 0
        self.line = 0  # characters typed on the current line at the end of the text
        self.line_width = 70
        self.sentence_words = 0

    # --- single keys ------------------------------------------------------------------------

    def _type(self, char: str) -> Patch:
        self.doc[self.cursor : self.cursor] = char.encode()
        self.cursor += 1
        return (self.cursor - 1, 0, char)

    def _backspace(self) -> Patch | None:
        if self.cursor == 0:
            return None
        self.cursor -= 1
        del self.doc[self.cursor]
        return (self.cursor, 1, "")

    # --- what a person does -----------------------------------------------------------------

    def _word(self) -> str:
        word: str = self.rng.choices(self.words, cum_weights=self.cum_weights)[0]
        if self.sentence_words == 0:
            word = word.capitalize()
        return word

    def _type_word(self, word: str) -> Iterator[Patch]:
        for char in word:
            if self.rng.random() < 0.05:  # a typo, noticed at once or a key or two later
                extra = self.rng.choice((0, 0, 1, 2))
                for _ in range(1 + extra):
                    yield self._type(self.rng.choice(_NEIGHBOURS))
                for _ in range(1 + extra):
                    if (patch := self._backspace()) is not None:
                        yield patch
            yield self._type(char)

    def _rub_out_word(self) -> Iterator[Patch]:
        """Backspace to the start of the word before the cursor (and the spaces after it)."""
        while self.cursor > 0 and chr(self.doc[self.cursor - 1]) == " ":
            if (patch := self._backspace()) is not None:
                yield patch
        while self.cursor > 0 and chr(self.doc[self.cursor - 1]) not in " \n":
            if (patch := self._backspace()) is not None:
                yield patch

    def _sentence_step(self) -> Iterator[Patch]:
        """One word and what follows it, at the end of the text; now and then second thoughts
        about the last few words, rubbed out and typed again."""
        if self.sentence_words > 1 and self.rng.random() < 0.1:
            for _ in range(self.rng.randint(1, min(6, self.sentence_words))):
                yield from self._rub_out_word()
                self.sentence_words -= 1
            if self.cursor > 0 and chr(self.doc[self.cursor - 1]) not in " \n":
                yield self._type(" ")
            self.line = len(self.doc) - (self.doc.rfind(b"\n") + 1)
        word = self._word()
        yield from self._type_word(word)
        self.sentence_words += 1
        self.line += len(word)
        if self.sentence_words > self.rng.randint(5, 18):
            yield self._type(self.rng.choice(".....?!"))
            self.sentence_words = 0
        elif self.rng.random() < 0.08:
            yield self._type(",")
        if self.line >= self.line_width:
            yield self._type("\n")
            if self.rng.random() < 0.15:  # a paragraph
                yield self._type("\n")
            self.line, self.line_width = 0, self.rng.randint(50, 90)
        else:
            yield self._type(" ")
            self.line += 1

    def _boundary(self) -> int:
        """A line end or a word start, somewhere in the text."""
        pos = self.rng.randrange(len(self.doc) + 1)
        if self.rng.random() < 0.4:
            end = self.doc.find(b"\n", pos)
            return len(self.doc) if end < 0 else end
        start = self.doc.rfind(b" ", 0, pos)
        return 0 if start < 0 else start + 1

    def _excursion(self) -> Iterator[Patch]:
        """Jump elsewhere, change something, come back to the end."""
        self.cursor = self._boundary()
        choice = self.rng.random()
        if choice < 0.45:  # insert a phrase
            at_word = self.cursor < len(self.doc) and chr(self.doc[self.cursor]) not in " \n"
            for i in range(self.rng.randint(1, 8)):
                if not at_word or i > 0:
                    yield self._type(" ")
                yield from self._type_word(
                    self.rng.choices(self.words, cum_weights=self.cum_weights)[0]
                )
            if at_word:
                yield self._type(" ")
        elif choice < 0.85:  # hold backspace over a few words
            for _ in range(self.rng.randint(1, 20)):
                yield from self._rub_out_word()
        else:  # select and delete a range
            length = min(self.rng.randint(2, 300), len(self.doc) - self.cursor)
            if length > 0:
                del self.doc[self.cursor : self.cursor + length]
                yield (self.cursor, length, "")
        self.cursor = len(self.doc)
        self.line = len(self.doc) - (self.doc.rfind(b"\n") + 1)

    def keystrokes(self) -> Iterator[Patch]:
        while True:
            if len(self.doc) > 200 and self.rng.random() < 0.012:
                yield from self._excursion()
            else:
                yield from self._sentence_step()


def generate(keystrokes: int, seed: int) -> Trace:
    """``keystrokes`` transactions of one patch each, typed by ``Typist(seed)``."""
    typist = Typist(seed)
    # islice never draws the key after the last one (drawing it would already edit the text).
    txns = [[patch] for patch in itertools.islice(typist.keystrokes(), keystrokes)]
    return Trace(start="", end=typist.doc.decode(), txns=txns)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keystrokes", type=int, default=260_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--out", type=Path, required=True, help="*.json or *.json.gz")
    a = p.parse_args(argv)
    trace = generate(a.keystrokes, a.seed)
    save(trace, a.out)
    deletes = sum(1 for txn in trace.txns for _, d, _ in txn if d)
    print(
        f"{a.out}: {len(trace.txns)} keystrokes ({deletes} deleting),"
        f" final text {len(trace.end)} characters",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
