"""GLUE data: the official TSV distribution (local or s3:// mirror) or the HF hub (`nyu-mll/glue`).

Both give the same shape: per split a list of rows `{<text fields>..., "label": int|float}`
with the hub's field names and label ids, so fine-tuning never knows where data came from.
The TSV layouts are those of the GLUE distribution (`download_glue_data.py`): every file
has a header row except CoLA's, MNLI has `dev_matched.tsv` and `dev_mismatched.tsv`, fields
are tab separated with no quoting.
"""

from __future__ import annotations

from common import storage
from evaluation.tasks import LABEL_NAMES, TaskSpec


class DataFormatError(ValueError):
    """A data file that is missing or not in the official format; says what was expected."""


# Per task: header column -> our field name (hub naming). The label column comes last.
_HEADER_COLUMNS = {
    "sst2": {"sentence": "sentence", "label": "label"},
    "mrpc": {"#1 String": "sentence1", "#2 String": "sentence2", "Quality": "label"},
    "stsb": {"sentence1": "sentence1", "sentence2": "sentence2", "score": "label"},
    "qqp": {"question1": "question1", "question2": "question2", "is_duplicate": "label"},
    "mnli": {"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"},
    "qnli": {"question": "question", "sentence": "sentence", "label": "label"},
    "rte": {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
}
_COLA_COLUMNS = 4  # source, label, original judgement mark, sentence; no header row
_MAX_BAD_ROW_FRACTION = 0.01  # the distributed QQP/MNLI files have a handful of broken rows; more means a wrong file


def tsv_files(task: TaskSpec) -> dict[str, str]:
    """Split name -> file name inside the task's directory."""
    if task.name == "mnli":
        return {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                "validation_mismatched": "dev_mismatched.tsv"}
    return {"train": "train.tsv", "validation": "dev.tsv"}


def find_task_dir(data_dir: str, task: TaskSpec) -> str:
    """`<data_dir>/<CoLA>` or `<data_dir>/glue/<CoLA>`, whichever holds the train file."""
    for cand in (storage.join(data_dir, task.tsv_dir), storage.join(data_dir, "glue", task.tsv_dir)):
        if storage.exists(storage.join(cand, "train.tsv")):
            return cand
    raise DataFormatError(
        f"{task.name}: no {task.tsv_dir}/train.tsv under {data_dir} (nor under {data_dir}/glue); "
        f"expected the GLUE distribution layout: {task.tsv_dir}/{', '.join(tsv_files(task).values())}")


def load_tsv_split(uri: str, task: TaskSpec) -> list[dict]:
    text = storage.read_text(uri).lstrip("\ufeff")  # MRPC's files start with a byte-order mark
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    if not lines:
        raise DataFormatError(f"{uri}: empty file")
    parse = _parse_cola if task.name == "cola" else _parse_with_header
    return parse(uri, task, lines)


def _parse_cola(uri: str, task: TaskSpec, lines: list[str]) -> list[dict]:
    rows = []
    for i, line in enumerate(lines, 1):
        cols = line.split("\t")
        if len(cols) != _COLA_COLUMNS or cols[1] not in ("0", "1"):
            hint = " (CoLA train/dev files have no header row)" if i == 1 else ""
            raise DataFormatError(f"{uri}:{i}: expected CoLA's 4 columns source<TAB>label(0/1)<TAB>mark<TAB>sentence"
                                  f"{hint}, got {line[:120]!r}")
        rows.append({"sentence": cols[3], "label": int(cols[1])})
    return rows


def _parse_with_header(uri: str, task: TaskSpec, lines: list[str]) -> list[dict]:
    header = lines[0].split("\t")
    wanted = _HEADER_COLUMNS[task.name]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataFormatError(f"{uri}: header must have columns {list(wanted)} for {task.name} "
                              f"(GLUE TSV as distributed); missing {missing}; header is {header[:12]}")
    index = {field: header.index(col) for col, field in wanted.items()}
    # MNLI's gold_label is the last column; dev rows carry extra annotator labels before it.
    label_from_end = task.name == "mnli"
    rows, bad = [], 0
    for i, line in enumerate(lines[1:], 2):
        cols = line.split("\t")
        if len(cols) < max(index.values()) + 1:
            bad += 1
            continue
        row = {f: cols[j] for f, j in index.items() if f != "label"}
        row["label"] = _label(uri, i, task, cols[-1] if label_from_end else cols[index["label"]])
        rows.append(row)
    if bad > max(1, _MAX_BAD_ROW_FRACTION * (len(lines) - 1)):
        raise DataFormatError(f"{uri}: {bad} of {len(lines) - 1} rows have too few tab-separated columns "
                              f"for {task.name}; is this the right file?")
    return rows


def _label(uri: str, line_no: int, task: TaskSpec, raw: str):
    raw = raw.strip()
    try:
        if task.num_labels == 1:
            return float(raw)
        if task.name in LABEL_NAMES:
            return LABEL_NAMES[task.name].index(raw)
        value = int(raw)
        if value not in range(task.num_labels):
            raise ValueError
        return value
    except ValueError:
        expected = LABEL_NAMES.get(task.name) or ("a float" if task.num_labels == 1 else tuple(range(task.num_labels)))
        raise DataFormatError(f"{uri}:{line_no}: {task.name} label {raw!r} is not one of {expected}") from None


def load_tsv(data_dir: str, task: TaskSpec) -> dict[str, list[dict]]:
    base = find_task_dir(data_dir, task)
    out = {}
    for split, name in tsv_files(task).items():
        uri = storage.join(base, name)
        if not storage.exists(uri):
            raise DataFormatError(f"{task.name}: missing {uri}")
        out[split] = load_tsv_split(uri, task)
    return out


def load_hub(task: TaskSpec) -> dict[str, list[dict]]:
    """nyu-mll/glue from the HF hub (downloads on first use; `datasets` imported only here)."""
    try:
        import datasets
    except ImportError:
        raise DataFormatError("loading GLUE from the hub needs the `datasets` package; "
                              "install it or pass --data-dir with a TSV mirror") from None
    ds = datasets.load_dataset("nyu-mll/glue", task.hub_config)
    fields = list(task.text_fields) + ["label"]
    return {split: [{f: r[f] for f in fields} for r in ds[split]] for split in ("train", *task.eval_splits)}


def load(task: TaskSpec, data_dir: str = "") -> dict[str, list[dict]]:
    return load_tsv(data_dir, task) if data_dir else load_hub(task)
