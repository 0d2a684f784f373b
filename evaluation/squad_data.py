"""SQuAD data: official JSON files (local or s3:// mirror) or the HF hub (`rajpurkar/squad[_v2]`).

Either way an example is `{id, title, context, question, answers: {text: [...], answer_start: [...]}}`
(the hub's shape); an unanswerable SQuAD 2.0 question has empty answer lists. `to_official`
turns examples back into the official JSON layout that `squad_metrics` scores.
"""

from __future__ import annotations

import json

from common import storage
from evaluation.glue_data import DataFormatError
from evaluation.tasks import TaskSpec


def file_names(task: TaskSpec) -> dict[str, str]:
    v = "v2.0" if task.squad_v2 else "v1.1"
    return {"train": f"train-{v}.json", "validation": f"dev-{v}.json"}


def parse_official(uri: str, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{uri}: not JSON ({exc}); expected the official SQuAD JSON file") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataFormatError(f"{uri}: expected the official SQuAD layout {{'version', 'data': [articles]}}")
    out = []
    try:
        for article in data["data"]:
            for para in article["paragraphs"]:
                context = para["context"]
                for qa in para["qas"]:
                    answers = qa["answers"]
                    if qa.get("is_impossible"):
                        answers = []  # 2.0 lists plausible_answers separately; these are not gold
                    out.append({
                        "id": qa["id"], "title": article.get("title", ""), "context": context,
                        "question": qa["question"],
                        "answers": {"text": [a["text"] for a in answers],
                                    "answer_start": [int(a["answer_start"]) for a in answers]},
                    })
    except (KeyError, TypeError) as exc:
        raise DataFormatError(f"{uri}: missing field {exc} in the SQuAD article/paragraph/question structure") from None
    return out


def find_file(data_dir: str, name: str) -> str:
    for cand in (storage.join(data_dir, name), storage.join(data_dir, "squad", name)):
        if storage.exists(cand):
            return cand
    raise DataFormatError(f"no {name} under {data_dir} (nor under {data_dir}/squad); "
                          "expected the official SQuAD file names")


def load(task: TaskSpec, data_dir: str = "") -> dict[str, list[dict]]:
    if not data_dir:
        return load_hub(task)
    return {split: parse_official(uri, storage.read_text(uri))
            for split, uri in ((s, find_file(data_dir, n)) for s, n in file_names(task).items())}


def load_hub(task: TaskSpec) -> dict[str, list[dict]]:
    try:
        import datasets
    except ImportError:
        raise DataFormatError("loading SQuAD from the hub needs the `datasets` package; "
                              "install it or pass --data-dir with the official JSON files") from None
    ds = datasets.load_dataset("rajpurkar/squad_v2" if task.squad_v2 else "rajpurkar/squad")
    keep = ("id", "title", "context", "question", "answers")
    return {split: [{k: r[k] for k in keep} for r in ds[split]] for split in ("train", "validation")}


def to_official(examples: list[dict]) -> dict:
    """Examples -> `{"data": [...]}` in the official layout, one paragraph per example."""
    paragraphs = [{"context": e["context"], "qas": [{
        "id": e["id"], "question": e["question"],
        "answers": [{"text": t, "answer_start": s} for t, s in zip(e["answers"]["text"], e["answers"]["answer_start"])],
    }]} for e in examples]
    return {"version": "examples", "data": [{"title": "", "paragraphs": paragraphs}]}
