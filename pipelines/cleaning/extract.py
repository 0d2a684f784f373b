"""HTML to main text with resiliparse.

Why resiliparse: `extract_plain_text(main_content=True)` is a C++ DOM walk (Lexbor), fast
enough that extraction of ~100 MB of HTML takes a few CPU-seconds (benchmarks/clean_throughput.py),
far cheaper per page than Python/lxml extractors such as trafilatura, with main-content quality
close to the best heuristic extractors (Bevendorff et al., SIGIR 2023). The same wheel ships the
encoding detector used here and the language-id model (langid.py). See docs/clean.md.
"""

from __future__ import annotations

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding

from pipelines.cleaning import records as R
from pipelines.cleaning.config import ReaderConfig


def decode_html(payload: bytes, charset: str | None) -> str:
    """Declared charset first, else detection; undecodable bytes are replaced, never fatal."""
    encoding = charset or detect_encoding(payload)
    return bytes_to_str(payload, encoding, errors="replace")


def html_to_text(html: str, main_content: bool = True) -> str:
    # preserve_formatting keeps one block element per line: the C4 and Gopher line rules need lines.
    return extract_plain_text(html, preserve_formatting=True, main_content=main_content,
                              list_bullets=True, alt_texts=False, links=False, form_fields=False,
                              noscript=False, comments=False)  # reader comment threads are not the page


def extract(raw: R.Html, cfg: ReaderConfig) -> R.Document | R.Reject:
    """A page from readers.py to its main text, or a reject saying why there is none."""
    try:
        text = html_to_text(decode_html(raw.payload, raw.charset), cfg.html_main_content)
    except Exception as exc:  # noqa: BLE001 - a page the parser chokes on is a reject, not a crash
        return R.reject(R.UNREADABLE_FILE, raw.source, raw.position, raw.payload,
                        f"html extraction failed: {exc}", cfg.preview_chars, raw.url)
    if not text.strip():
        return R.reject(R.EMPTY_DOCUMENT, raw.source, raw.position, raw.payload,
                        "no text after HTML extraction", cfg.preview_chars, raw.url)
    return R.document(raw.source, raw.position, text, raw.url)
