"""Real prose found on this machine, as documents for tests and benchmarks.

Tests must run on tiny *real* text (a tokenizer trained on random words learns
nothing, and packing statistics such as the padding fraction depend on real
sentence-length distributions), but must not download anything. Every Python
install ships its standard library, whose docstrings are English prose written
by people; installed HTML books (the Rust book under ~/.rustup) add long-form
chapters when present. Output is deterministic for a given machine.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import html.parser
import functools
import os
import random
import sysconfig
from pathlib import Path
from typing import Iterator

# A few lines in other scripts and emoji, so byte fallback and multi-byte
# characters are exercised even when the machine's prose is all ASCII.
MULTILINGUAL = [
    "Größenwahn ist keine Lösung, sagte der Bäcker in Köln.",
    "L'été dernier, nous sommes allés à Montréal voir des œuvres d'art.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "北京烤鸭是中国著名的菜肴之一。",
    "서울은 대한민국의 수도이다.",
    "Москва — столица России, крупнейший город страны.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "नमस्ते, आप कैसे हैं?",
    "مرحبا بالعالم، هذا نص عربي قصير.",
    "שלום עולם, זה משפט בעברית.",
    "The deploy went fine 🚀🎉 but the tests 🧪 were flaky 😅.",
    "Family emoji 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵 are multi-codepoint sequences.",
    "Math: ∀x ∈ ℝ, x² ≥ 0; ∑ₖ 1/k² = π²/6.",
    "Tabs\tand  double  spaces, plus a zero-width joiner\u200d here.",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ﬁ ligatures and Ⅻ numerals.",
]


def _docstrings(path: str) -> list[str]:
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 80:
                out.append(doc)
    return out


def _paragraphs(text: str) -> str:
    # Docstrings wrap at ~72 columns; re-join wrapped lines into paragraphs.
    paras = [" ".join(p.split()) for p in text.split("\n\n")]
    return "\n".join(p for p in paras if p)


def stdlib_documents() -> Iterator[dict]:
    """One document per stdlib module: its docstrings as paragraphs."""
    root = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "*", "*.py"))):
        if "/test" in path or "site-packages" in path:
            continue
        docs = _docstrings(path)
        text = "\n".join(_paragraphs(d) for d in docs)
        if len(text) > 200:
            rel = os.path.relpath(path, root)
            yield {"id": hashlib.sha1(("stdlib:" + rel).encode()).hexdigest(), "text": text, "source": rel}


class _Text(html.parser.HTMLParser):
    SKIP = {"script", "style", "pre", "code", "nav", "head"}

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        elif tag in ("p", "li", "h1", "h2", "h3", "br", "div"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data.replace("\n", " "))  # source line wraps inside a paragraph


def html_book_documents(pattern: str = "~/.rustup/toolchains/*/share/doc/rust/html/book/ch*.html") -> Iterator[dict]:
    """One document per book chapter page (tags, code and navigation stripped)."""
    seen = set()
    for path in sorted(glob.glob(os.path.expanduser(pattern))):
        name = os.path.basename(path)
        if name in seen:  # several toolchains ship the same book
            continue
        seen.add(name)
        p = _Text()
        p.feed(Path(path).read_text(encoding="utf-8", errors="replace"))
        lines = [" ".join(line.split()) for line in "".join(p.parts).split("\n")]
        text = "\n".join(line for line in lines if len(line) > 30)  # drops page chrome
        if len(text) > 200:
            yield {"id": hashlib.sha1(("book:" + name).encode()).hexdigest(), "text": text, "source": path}


@functools.lru_cache(maxsize=4)
def _all() -> tuple[dict, ...]:
    return tuple(list(html_book_documents()) + list(stdlib_documents()))


def documents(limit_chars: int | None = None, multilingual: bool = True) -> list[dict]:
    """Real documents (book chapters first, then stdlib docstrings), up to about `limit_chars` of text."""
    out, total = [], 0
    for doc in _all():
        out.append(dict(doc))
        total += len(doc["text"])
        if limit_chars and total >= limit_chars:
            break
    if multilingual:
        text = "\n".join(MULTILINGUAL)
        out.append({"id": hashlib.sha1(b"multilingual").hexdigest(), "text": text, "source": "multilingual"})
    return out


def variant(text: str, copy: int) -> str:
    """Copy `copy` of a text with the words of each line shuffled (the last word, which carries the
    line's end mark, stays last); copy 0 is the text itself. Each copy keeps every per-document
    statistic the cleaning rules look at (words, lengths, lines, stop words, end marks, characters)
    but shares almost no 5-word shingle with the others, so a corpus of copies scales real text
    past what the machine has without dedup folding it back."""
    if copy == 0:
        return text
    rng = random.Random(copy)
    out = []
    for line in text.split("\n"):
        words = line.split(" ")
        if len(words) > 2:
            head = words[:-1]
            rng.shuffle(head)
            line = " ".join(head + words[-1:])
        out.append(line)
    return "\n".join(out)


def lines(n: int) -> list[str]:
    """`n` non-empty lines of real text (with the multilingual lines mixed in), for tokenizer parity tests."""
    out: list[str] = []
    for i, doc in enumerate(documents()):
        for line in doc["text"].split("\n"):
            out.append(line)
            if len(out) % 50 == 0:
                out.append(MULTILINGUAL[(len(out) // 50) % len(MULTILINGUAL)])
            if len(out) >= n:
                return out[:n]
    return out


def write_documents(output: str, docs: list[dict], num_shards: int = 3, settings=None) -> dict:
    """Publish `docs` as a finished documents output (the format `pipelines.clean` writes), for tests and benchmarks."""
    from common import manifest, storage
    from pipelines import documents

    rows = [{"id": d["id"], "text": d["text"], "url": d.get("url"), "source": d.get("source"),
             "lang": d.get("lang", "en"), "lang_score": d.get("lang_score", 1.0)} for d in docs]
    shards = []
    for i in range(num_shards):
        part = rows[i::num_shards]
        data = documents.encode_shard(part)
        path = f"{documents.DOCUMENTS_DIR}/{documents.shard_name(i, num_shards)}"
        storage.write_bytes(storage.join(output, path), data, settings)
        shards.append({"path": path, "records": len(part), "bytes": len(data), "sha256": storage.sha256_bytes(data)})
    m = manifest.build("documents", inputs=[], config={"source": "pipelines.packing.prose"}, shards=shards,
                       counters={"records_read": len(rows), "kept": len(rows)})
    manifest.write(output, m, settings)
    return m
