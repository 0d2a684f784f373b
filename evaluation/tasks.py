"""The downstream tasks: what each one reads, how many labels it has, how it is scored.

One `TaskSpec` per task name a user can type; `glue` expands to the eight GLUE tasks the
ELECTRA paper reports (WNLI is left out, as in the paper). Column names are those of the
HF hub datasets (`nyu-mll/glue`), which is also the shape the TSV loader produces.
"""

from __future__ import annotations

import dataclasses


class TaskError(ValueError):
    """A task name that does not exist."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str  # what users type on --tasks
    kind: str  # "glue" (sentence / pair classification or regression) or "squad" (extractive QA)
    text_fields: tuple[str, ...] = ()  # one field = single sentence task, two = pair task
    num_labels: int = 2  # 1 means regression (STS-B)
    tsv_dir: str = ""  # directory name in the official GLUE distribution
    hub_config: str = ""  # config name on nyu-mll/glue
    eval_splits: tuple[str, ...] = ("validation",)  # MNLI has two dev sets
    metrics: tuple[str, ...] = ("accuracy",)  # every metric reported, in report order
    primary: str = "accuracy"  # the metric the paper column and the regression check use
    epochs: float = 3.0  # ELECTRA fine-tuning default; 10 for the small RTE and STS-B sets, 2 for SQuAD
    paper_key: str = ""  # column of the ELECTRA paper table it is compared with
    squad_v2: bool = False  # SQuAD 2.0 has unanswerable questions
    unordered: bool = False  # sentence order carries no meaning: the official code also trains on swapped pairs


def _glue(name, fields, tsv_dir, hub, *, num_labels=2, metrics=("accuracy",), primary="accuracy",
          epochs=3.0, paper_key=None, eval_splits=("validation",), unordered=False):
    return TaskSpec(name, "glue", tuple(fields), num_labels, tsv_dir, hub, tuple(eval_splits), tuple(metrics),
                    primary, epochs, paper_key or name, unordered=unordered)


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    _glue("cola", ["sentence"], "CoLA", "cola", metrics=("mcc",), primary="mcc"),
    _glue("sst2", ["sentence"], "SST-2", "sst2"),
    _glue("mrpc", ["sentence1", "sentence2"], "MRPC", "mrpc", metrics=("accuracy", "f1"), unordered=True),
    _glue("stsb", ["sentence1", "sentence2"], "STS-B", "stsb", num_labels=1, metrics=("pearson", "spearman"),
          primary="spearman", epochs=10.0, unordered=True),
    _glue("qqp", ["question1", "question2"], "QQP", "qqp", metrics=("accuracy", "f1")),
    # One fine-tuning, scored on both dev sets; the paper's single MNLI column is matched.
    _glue("mnli", ["premise", "hypothesis"], "MNLI", "mnli", num_labels=3,
          eval_splits=("validation_matched", "validation_mismatched")),
    _glue("qnli", ["question", "sentence"], "QNLI", "qnli"),
    _glue("rte", ["sentence1", "sentence2"], "RTE", "rte", epochs=10.0),
    TaskSpec("squad_v1", "squad", metrics=("exact", "f1"), primary="f1", epochs=2.0, paper_key="squad_v1"),
    TaskSpec("squad_v2", "squad", metrics=("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
                                           "best_exact", "best_f1"),
             primary="f1", epochs=2.0, paper_key="squad_v2", squad_v2=True),
)}

GROUPS = {"glue": ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"), "squad": ("squad_v1", "squad_v2")}

# Hub label order (nyu-mll/glue ClassLabel names); TSV string labels map onto these ids.
LABEL_NAMES = {
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
}


def resolve(names: str | list[str] | tuple[str, ...]) -> list[TaskSpec]:
    """`"glue,squad_v1"` -> task specs, groups expanded, duplicates dropped, unknown names rejected."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    out: list[str] = []
    for raw in names:
        n = raw.strip().lower().replace("-", "").replace("sts_b", "stsb")
        if not n:
            continue
        expanded = GROUPS.get(n, (n,))
        for e in expanded:
            if e not in TASKS:
                valid = ", ".join(list(GROUPS) + list(TASKS))
                raise TaskError(f"unknown task {raw.strip()!r}; valid task names: {valid}")
            if e not in out:
                out.append(e)
    if not out:
        raise TaskError("no task given; valid task names: " + ", ".join(list(GROUPS) + list(TASKS)))
    return [TASKS[n] for n in out]


def split_label(task: TaskSpec, split: str) -> str:
    """Name of a task/eval-split pair in results: `mnli_m`, `mnli_mm`, else the task name."""
    if split == "validation_matched":
        return f"{task.name}_m"
    if split == "validation_mismatched":
        return f"{task.name}_mm"
    return task.name
