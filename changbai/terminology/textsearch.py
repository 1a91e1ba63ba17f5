"""The $expand text filter over a code system: which concepts contain every word of a query.

A word matches where it is a substring of a concept's code, display or a designation, case-folded (Chinese
names have no spaces, so a word is matched anywhere, not at word starts). Scanning every concept's text per
query was nearly all of a filtered $expand of a big value set; instead each code system gets, once, an
inverted index of the characters and character pairs of its concepts' texts. A query intersects the
postings of its words' pairs (of the character, for a one-character word) and then checks the few
candidates left with a real substring test, so the answer is exactly the scan's.
"""

from __future__ import annotations

from collections.abc import Iterable


def fold(text: str) -> str:
    """The form texts and queries are compared in."""
    return text.lower()


def words_of(query: str) -> list[str]:
    return [fold(w) for w in query.split() if w]


class TextIndex:
    """Concept texts (code, display, designations: folded, joined) and their 1- and 2-character postings."""

    def __init__(self, texts: Iterable[tuple[str, str]]) -> None:
        self.codes: list[str] = []
        self.texts: list[str] = []
        self.postings: dict[str, list[int]] = {}
        postings = self.postings
        for ordinal, (code, text) in enumerate(texts):
            self.codes.append(code)
            self.texts.append(text)
            for key in {*text, *(text[i : i + 2] for i in range(len(text) - 1))}:
                found = postings.get(key)
                if found is None:
                    postings[key] = [ordinal]
                else:
                    found.append(ordinal)

    def search(self, words: list[str]) -> set[str]:
        """Codes whose text contains every (folded) word."""
        found: set[int] | None = None
        for word in sorted(words, key=len, reverse=True):  # longer words are the more selective
            keys = {word[i : i + 2] for i in range(len(word) - 1)} or {word}
            lists = sorted((self.postings.get(k, []) for k in keys), key=len)
            candidates = set(lists[0])
            for more in lists[1:]:
                if not candidates:
                    break
                candidates.intersection_update(more)
            if found is not None:
                candidates &= found
            found = {i for i in candidates if word in self.texts[i]}
            if not found:
                return set()
        return {self.codes[i] for i in found} if found is not None else set(self.codes)
