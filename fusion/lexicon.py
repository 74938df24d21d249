"""Dictionary matching of a note's sentences against code names (titles and inclusion terms).

A code name matches a sentence by the share of its informative words the sentence contains:
``coverage(name, sentence) = sum(idf(w) for w in name if w in sentence) / sum(idf(w) for w in name)``,
with words lower-cased, cut to their first ``token_prefix`` characters (8: joins some word forms,
``hypertensive``/``hypertension``; on CodiEsp dev 8 beat 5, 6, whole words and plural stripping)
and a short stop list removed. A code's coverage in a note is the best over its names and the
note's sentences, and that sentence is its lexical evidence.

This is the classic dictionary look-up of the CodiEsp systems, as a score beside the learned
ones: it needs no training note, so it reaches codes the supervised path has never seen, and the
coder learns from the training notes how far to trust each code's matches
(:meth:`kgcode.coder.Coder.fit_lexicon`).

Matching takes two passes over posting lists (each word: the names it occurs in, with its IDF
share of each). Pass 1 sums the postings of the note's words into each name's coverage by the
whole note, an upper bound of its coverage by any one sentence; pass 2 takes only the names above
``min_coverage`` and multiplies their ``names x words`` weights by the note's 0/1 ``words x
sentences`` matrix (~2 ms for a CodiEsp note against the ~110,000 names of ICD-10-CM).

Example:
    >>> lex = Lexicon([["Calculus of kidney", "Renal stone"], ["Essential hypertension"]])
    >>> cov, best = lex.match(["She has a renal stone.", "No fever."])
    >>> round(float(cov[0]), 2), int(best[0]), round(float(cov[1]), 2), int(best[1])
    (1.0, 0, 0.0, -1)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT_STOPWORDS", "LEXICON_FORMAT", "Lexicon"]

LEXICON_FORMAT = "kgcode-lexicon"
LEXICON_FORMAT_VERSION = 1

#: Function words and the boilerplate of ICD titles ("other", "unspecified", "NOS", "in diseases
#: classified elsewhere"): they carry no evidence of one code over another.
DEFAULT_STOPWORDS: tuple[str, ...] = (
    "a", "additional", "an", "and", "as", "at", "by", "classified", "code", "condition", "disease",
    "diseases", "disorder", "disorders", "due", "elsewhere", "first", "for", "from", "in", "nos",
    "not", "of", "on", "or", "other", "part", "site", "specified", "the", "to", "type",
    "unspecified", "use", "with", "without",
)

_WORD = re.compile(r"[a-z0-9]+")


class Lexicon:
    """Sparse name matcher over a fixed list of labels.

    Args:
        names: for each label (row), its names; a label may have none.
        token_prefix: words are cut to this many characters.
        stopwords: words ignored in names and sentences.

    Attributes:
        num_labels: number of labels (rows).
        num_names: number of (label, name) entries with at least one informative word.
    """

    #: cells of one (candidate names x sentences) block of pass 2 (4 MB of float32)
    _CELLS = 1 << 20

    def __init__(
        self,
        names: Sequence[Sequence[str]],
        *,
        token_prefix: int = 8,
        stopwords: Sequence[str] = DEFAULT_STOPWORDS,
    ) -> None:
        if token_prefix < 1:
            raise ValueError(f"token_prefix={token_prefix}: expected a positive number of characters")
        self.token_prefix = int(token_prefix)
        self.stopwords = tuple(sorted(set(stopwords)))
        self._stop = frozenset(self.stopwords)
        self.names = [list(dict.fromkeys(n for n in label_names if n)) for label_names in names]
        self.num_labels = len(self.names)
        entries: list[tuple[int, list[str]]] = []
        for row, label_names in enumerate(self.names):
            for name in label_names:
                words = sorted(set(self.tokens(name)))
                if words:
                    entries.append((row, words))
        self.num_names = len(entries)
        df: dict[str, int] = {}
        for _, words in entries:
            for w in words:
                df[w] = df.get(w, 0) + 1
        n = max(1, len(entries))
        idf = {w: math.log(n / c) + 1e-3 for w, c in df.items()}
        # each word's posting list: the names it occurs in and its IDF share of each name
        postings: dict[str, tuple[list[int], list[float]]] = {w: ([], []) for w in sorted(df)}
        for k, (_, words) in enumerate(entries):
            total = sum(idf[w] for w in words)
            for w in words:
                postings[w][0].append(k)
                postings[w][1].append(idf[w] / total)
        self._postings = {
            w: (np.asarray(ids, dtype=np.int64), np.asarray(ws, dtype=np.float32))
            for w, (ids, ws) in postings.items()
        }
        self._name_row = np.asarray([row for row, _ in entries], dtype=np.int64)

    # ------------------------------------------------------------------ matching

    def tokens(self, text: str) -> list[str]:
        """The informative words of a text (lower-cased, cut to ``token_prefix``, stop words removed)."""
        p = self.token_prefix
        return [w[:p] for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in self._stop]

    def match(self, sentences: Sequence[str], min_coverage: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Each label's best coverage over its names and the sentences, and the sentence it came from.

        Args:
            sentences: the note's sentences (or any segments).
            min_coverage: coverages below this count as no match (a floor of 0.5 also skips, in
                pass 1, the many names that share one common word with the note).

        Returns:
            ``(coverage, best)``: coverage in [0, 1] (0 when nothing matches) and the index of
            the best sentence (-1 when nothing matches).

        Shapes:
            coverage: ``(num_labels,)`` float32; best: ``(num_labels,)`` int32.
        """
        coverage = np.zeros(self.num_labels, dtype=np.float32)
        best = np.full(self.num_labels, -1, dtype=np.int32)
        sentence_words = [{w for w in self.tokens(t) if w in self._postings} for t in sentences]
        words = sorted(set().union(*sentence_words))
        if not self.num_names or not words:
            return coverage, best
        col = {w: j for j, w in enumerate(words)}
        ids = np.concatenate([self._postings[w][0] for w in words])
        ws = np.concatenate([self._postings[w][1] for w in words])
        cols = np.repeat(np.arange(len(words)), [len(self._postings[w][0]) for w in words])
        # pass 1: coverage by the whole note, an upper bound of any one sentence's coverage
        floor = max(float(min_coverage) - 1e-6, 1e-9)
        candidate = np.bincount(ids, ws, minlength=self.num_names) >= floor
        cand = np.flatnonzero(candidate)
        if not len(cand):
            return coverage, best
        # pass 2: the candidates' coverage in each sentence, (candidates x words) @ (words x sentences)
        position = np.full(self.num_names, -1, dtype=np.int64)
        position[cand] = np.arange(len(cand))
        keep = candidate[ids]
        weights = np.zeros((len(cand), len(words)), dtype=np.float32)
        weights[position[ids[keep]], cols[keep]] = ws[keep]
        present = np.zeros((len(words), len(sentences)), dtype=np.float32)
        for s, ws_s in enumerate(sentence_words):
            present[[col[w] for w in ws_s], s] = 1.0
        name_cov = np.empty(len(cand), dtype=np.float32)
        name_sent = np.empty(len(cand), dtype=np.int64)
        step = max(1, self._CELLS // max(1, len(sentences)))
        for start in range(0, len(cand), step):
            cov = weights[start : start + step] @ present
            arg = cov.argmax(axis=1)  # ties keep the earlier sentence
            name_cov[start : start + step] = cov[np.arange(len(arg)), arg]
            name_sent[start : start + step] = arg
        keep_names = name_cov >= floor
        name_cov, name_sent, names = name_cov[keep_names], name_sent[keep_names], cand[keep_names]
        if not len(names):
            return coverage, best
        cov, sent, rows = np.minimum(name_cov, 1.0), name_sent, self._name_row[names]
        # the best name per label: sort by (row, -coverage, sentence) and take each row's first
        order = np.lexsort((sent, -cov, rows))
        rows, cov, sent = rows[order], cov[order], sent[order]
        first_of_row = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        coverage[rows[first_of_row]] = cov[first_of_row]
        best[rows[first_of_row]] = sent[first_of_row]
        return coverage, best

    # ------------------------------------------------------------------ saving

    def to_dict(self, labels: Sequence[str]) -> dict[str, Any]:
        """A JSON-ready description (``lexicon.json`` of a coder folder).

        Args:
            labels: the label codes, one per row (the names are stored by code, so the file is
                readable and editable).
        """
        if len(labels) != self.num_labels:
            raise ValueError(f"{len(labels)} labels for a lexicon of {self.num_labels} rows")
        return {
            "format": LEXICON_FORMAT,
            "format_version": LEXICON_FORMAT_VERSION,
            "token_prefix": self.token_prefix,
            "stopwords": list(self.stopwords),
            "names": {code: names for code, names in zip(labels, self.names, strict=True) if names},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], labels: Sequence[str]) -> Lexicon:
        """Rebuild from :meth:`to_dict` output for these labels (names of unknown codes are ignored).

        Raises:
            ValueError: not a lexicon of a known format version.
        """
        if data.get("format") != LEXICON_FORMAT or data.get("format_version") != LEXICON_FORMAT_VERSION:
            raise ValueError(
                f"not a {LEXICON_FORMAT} of format version {LEXICON_FORMAT_VERSION} "
                f"(format {data.get('format')!r}, version {data.get('format_version')!r})"
            )
        by_code = data.get("names") or {}
        if not isinstance(by_code, Mapping):
            raise ValueError("'names' must map codes to lists of names")
        return cls(
            [list(by_code.get(code) or ()) for code in labels],
            token_prefix=int(data.get("token_prefix", 8)),
            stopwords=list(data.get("stopwords", DEFAULT_STOPWORDS)),
        )
