"""Typed configuration of the clean job. Every rule has a documented default.

Defaults follow the published rule sets: C4 (Raffel et al. 2020, `c4_utils.py` in TFDS)
and Gopher (Rae et al. 2021, Table A1), so a run with no config is the textbook pipeline.
A `--config` file (JSON or YAML) mirrors this nesting; unknown keys are rejected.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

from common import configs, storage

FORMATS = ("auto", "warc", "wet", "jsonl", "parquet", "text")


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
    text_field: str = "text"  # JSONL/Parquet column holding the document text
    id_field: str | None = "id"  # column with the record's own id; absent or None -> hash of (source, position)
    url_field: str | None = "url"  # column with the source URL, when the dataset has one
    text_unit: Literal["file", "line"] = "file"  # plain text: a whole file is one document, or each line is
    max_record_bytes: int = 4 << 20  # larger raw records go to rejects/ (too_large): no web page is 4 MiB of text
    html_main_content: bool = True  # resiliparse main-content heuristics: drops nav bars, footers, sidebars
    preview_chars: int = 500  # how much of a rejected record is kept in rejects/ for a human to look at

    def __post_init__(self):
        if self.max_record_bytes <= 0 or self.preview_chars < 0:
            raise configs.ConfigError("reader.max_record_bytes must be > 0 and reader.preview_chars >= 0")


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    nfc: bool = True  # composed Unicode: the same word always has the same code points (dedup, tokenizer)
    strip_control: bool = True  # C0/C1 controls except \n and \t are never text
    collapse_whitespace: bool = True  # runs of spaces -> one space, lines stripped, >1 blank line -> one


@dataclasses.dataclass(frozen=True)
class C4Config:
    enabled: bool = True
    terminal_punct_lines: bool = True  # keep only lines ending in . ! ? or a closing quote (C4)
    min_words_per_line: int = 3  # C4: shorter lines are menus, buttons, captions
    max_word_length: int = 1000  # C4: a line with a longer "word" is minified code or a hash
    min_sentences: int = 5  # C4: pages with fewer sentences (after line filtering) are dropped
    drop_lorem_ipsum: bool = True  # C4: placeholder text drops the whole page
    drop_javascript_lines: bool = True  # C4: "enable javascript" warnings
    drop_curly_bracket: bool = True  # C4: a kept line with "{" means code; the page is dropped
    drop_policy_lines: bool = True  # C4: cookie / terms-of-use / privacy-policy boilerplate lines
    # C4 also drops pages containing a word of a bad-words list (LDNOOBW for English). No list ships
    # with this project: point this at one word or phrase per line (local or s3://) to apply it.
    bad_words_file: str | None = None


@dataclasses.dataclass(frozen=True)
class GopherQualityConfig:
    enabled: bool = True
    min_words: int = 50  # Gopher: fewer words is not a document
    max_words: int = 100_000  # Gopher: more is a dump, not prose
    min_mean_word_length: float = 3.0  # Gopher: shorter means tables of symbols or numbers
    max_mean_word_length: float = 10.0  # Gopher: longer means URLs, hashes, run-together text
    max_symbol_word_ratio: float = 0.1  # Gopher: '#' and ellipses per word
    max_bullet_lines_frac: float = 0.9  # Gopher: pages that are lists of bullets
    max_ellipsis_lines_frac: float = 0.3  # Gopher: truncated teasers ("Read more...")
    min_alpha_words_frac: float = 0.8  # Gopher: words with at least one letter
    min_stop_words: int = 2  # Gopher: English prose uses the/be/to/of/and/that/have/with


@dataclasses.dataclass(frozen=True)
class GopherRepetitionConfig:
    enabled: bool = True
    max_dup_line_frac: float = 0.30  # Gopher Table A1: duplicate lines / lines
    max_dup_para_frac: float = 0.30  # duplicate paragraphs / paragraphs
    max_dup_line_char_frac: float = 0.20  # characters in duplicate lines / characters
    max_dup_para_char_frac: float = 0.20  # characters in duplicate paragraphs / characters
    # most frequent n-gram's characters / all characters, for n = 2, 3, 4
    max_top_ngram_char_frac: tuple[float, ...] = (0.20, 0.18, 0.16)
    # characters in repeated n-grams / all characters, for n = 5..10
    max_dup_ngram_char_frac: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)

    def __post_init__(self):
        if len(self.max_top_ngram_char_frac) != 3 or len(self.max_dup_ngram_char_frac) != 6:
            raise configs.ConfigError("gopher_repetition: 3 top-n-gram (n=2..4) and 6 dup-n-gram (n=5..10) limits")


@dataclasses.dataclass(frozen=True)
class LangIdConfig:
    enabled: bool = True
    languages: tuple[str, ...] = ("en",)  # ISO 639-1 codes to keep (resiliparse detect_fast profiles)
    # score = 1 - rank/1200 from resiliparse's out-of-place rank; 1200 is where it says results
    # become false, English prose scores 0.4-0.7, so 0.25 (rank <= 900) keeps prose, drops noise
    min_score: float = 0.25
    max_chars: int = 5000  # detect on a prefix: the profile is stable after a few KB, cost stays O(1)


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    exact: bool = True  # drop documents whose normalised text is identical (keeps the smallest id)
    near: bool = True  # MinHash LSH near-duplicate removal
    ngram: int = 5  # word shingle size (5-grams, as in Gopher / FineWeb)
    bands: int = 14  # LSH bands; with 8 rows the S-curve threshold is (1/14)^(1/8) ~= 0.72 Jaccard
    rows: int = 8  # rows per band
    seed: int = 1  # MinHash permutation seed: part of the config, so output is reproducible

    def __post_init__(self):
        if self.ngram < 1 or self.bands < 1 or self.rows < 1:
            raise configs.ConfigError("dedup.ngram, dedup.bands and dedup.rows must be >= 1")

    @property
    def threshold(self) -> float:
        return (1.0 / self.bands) ** (1.0 / self.rows)


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    # Target size of a documents (and rejects) shard, in MB of Parquet (gzip) bytes; the shard count
    # is total size / shard_mb. 512 MB: large enough that a 1 TB crawl's output is a few thousand
    # objects (cheap to list, and each GET streams long enough to amortise its latency), small
    # enough that a reader or tokenizer worker takes one shard as a unit. Shards are cut between
    # blocks, so a shard is at most shard_mb unless one block alone is larger. docs/clean.md.
    shard_mb: float = 512
    # Stored input MB per block: the documents of a block (a hash range) are grouped, sorted and
    # encoded by one DoFn call, so this bounds that call's memory: at most the block's
    # decompressed input, in practice its kept text (a few % of raw HTML, ~30-50% of WET text).
    block_input_mb: float = 32

    def __post_init__(self):
        if self.shard_mb <= 0 or self.block_input_mb <= 0:
            raise configs.ConfigError("output.shard_mb and output.block_input_mb must be > 0")

    def blocks(self, input_bytes: int) -> int:
        """How many hash-range blocks the documents are grouped into: grows with the input."""
        return max(1, -(-int(input_bytes) // max(1, int(self.block_input_mb * (1 << 20)))))


@dataclasses.dataclass(frozen=True)
class CleanConfig:
    inputs: tuple[str, ...] = ()  # globs, local or s3://
    # Paths files (Common Crawl's warc.paths.gz / wet.paths.gz: one key per line, gzip or plain),
    # local or s3://; each line is an input file
    input_lists: tuple[str, ...] = ()
    # What relative lines of an input list are resolved against: Common Crawl's lists name keys
    # of its public bucket (point this at a mirror, or at https-free local copies)
    input_prefix: str = "s3://commoncrawl/"
    output: str = ""  # output URI (local directory or s3://bucket/prefix)
    format: str = "auto"  # auto = detect from name and content; else force one reader for every input
    reader: ReaderConfig = ReaderConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    langid: LangIdConfig = LangIdConfig()
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    c4: C4Config = C4Config()
    dedup: DedupConfig = DedupConfig()
    out: OutputConfig = OutputConfig()

    def __post_init__(self):
        if self.format not in FORMATS:
            raise configs.ConfigError(f"format {self.format!r} is not one of {FORMATS}")

    def rules(self) -> dict:
        """What the manifest records and hashes: everything but where the output goes."""
        d = dataclasses.asdict(self)
        d.pop("output")
        return d


def load_file(uri: str) -> dict:
    """A JSON or YAML config file (local or s3://) as a dict."""
    text = storage.read_text(uri)
    if uri.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise configs.ConfigError(f"{uri}: a config file holds a mapping, got {type(data).__name__}")
    return data


def build(inputs: list[str], output: str, fmt: str | None = None, config_file: str | None = None,
          overrides: list[str] | None = None, input_lists: list[str] | None = None,
          input_prefix: str | None = None) -> CleanConfig:
    """CleanConfig from a file, then the command line (inputs, output, format, key=value overrides)."""
    data = load_file(config_file) if config_file else {}
    cfg = configs.from_dict(CleanConfig, data)
    top: dict = {}
    if inputs:
        top["inputs"] = tuple(inputs)
    if input_lists:
        top["input_lists"] = tuple(input_lists)
    if input_prefix:
        top["input_prefix"] = input_prefix
    if output:
        top["output"] = output
    if fmt:
        top["format"] = fmt
    cfg = dataclasses.replace(cfg, **top)
    return configs.apply_overrides(cfg, overrides or [])
