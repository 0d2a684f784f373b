"""Published ELECTRA dev-set scores: for each size the paper's own row, and the released model as a second row.

A run of this project trains the paper's recipe (Small 1M steps, Base 766K, Large 400K:
`pretraining/config.py`), so its report is compared first with the paper's row for that size
and step count. The released checkpoints were trained longer and, for Small, differently
(ELECTRA-Small++: 4M steps with a full-size generator), so they are a second, labelled row,
never the yardstick. Sources (Clark et al., "ELECTRA: Pre-training Text Encoders as
Discriminators Rather Than Generators", ICLR 2020):

- Table 1, "Comparison of small models on the GLUE dev set": only the GLUE average per model
  (ELECTRA-Small 79.9, ELECTRA-Base 85.1); per-task dev scores of these rows are not in the
  paper's tables, so a Small or Base run is compared task by task with the released row only.
- Table 2, "Comparison of large models on the GLUE dev set": ELECTRA-400K and ELECTRA-1.75M.
- Table 4, "Results on the SQuAD for non-ensemble models": dev EM/F1 of ELECTRA-Base,
  ELECTRA-400K and ELECTRA-1.75M.
- The released models (ELECTRA-Small++, ELECTRA-Base++, ELECTRA-1.75M) as listed in the
  google-research/electra README, "Expected Results" (dev-set medians over many seeds; its SQuAD
  columns are EM).

Scale 0-100; None = not published. CoLA is Matthews corr., STS-B Spearman, the rest accuracy;
the single MNLI number is compared with both matched and mismatched. The GLUE average is over
the eight tasks (WNLI left out), as in the paper.
"""

from __future__ import annotations

import dataclasses

GLUE_KEYS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")


@dataclasses.dataclass(frozen=True)
class PaperRow:
    label: str  # what the report prints
    source: str  # which table it comes from
    steps: int  # pretraining steps of that model
    glue: dict[str, float | None]  # GLUE task -> dev score (primary metric)
    glue_average: float | None  # the paper's GLUE score (average of the eight tasks)
    squad: dict[str, float | None]  # "squad_v1_exact", "squad_v1_f1", "squad_v2_exact", "squad_v2_f1"

    def scores(self, result_key: str, primary: str) -> dict[str, float | None]:
        """{metric: published number or None} for a results entry (`cola`, `mnli_mm`, `squad_v2`...)."""
        if result_key.startswith("squad"):
            return {m: self.squad.get(f"{result_key}_{m}") for m in ("exact", "f1")}
        return {primary: self.glue.get(result_key.split("_")[0])}  # mnli_m / mnli_mm -> mnli

    def describe(self) -> dict:
        return {"label": self.label, "source": self.source, "steps": self.steps, "glue_average": self.glue_average}


def _glue(*values: float | None) -> dict[str, float | None]:
    return dict(zip(GLUE_KEYS, values))


def _squad(v1_em=None, v1_f1=None, v2_em=None, v2_f1=None) -> dict[str, float | None]:
    return {"squad_v1_exact": v1_em, "squad_v1_f1": v1_f1, "squad_v2_exact": v2_em, "squad_v2_f1": v2_f1}


_README = "google-research/electra README, Expected Results (released model, dev medians)"

# size -> (the paper's row for the size and step count of this project's recipe, the released model)
ROWS: dict[str, tuple[PaperRow, PaperRow]] = {
    "small": (
        PaperRow("ELECTRA-Small, 1M steps (paper)", "paper Table 1 (GLUE dev average only)", 1_000_000,
                 _glue(*[None] * 8), 79.9, _squad()),
        PaperRow("ELECTRA-Small++ released (4M steps, full-size generator)", _README, 4_000_000,
                 _glue(57.0, 91.2, 88.0, 87.5, 89.0, 81.3, 88.4, 66.7), None, _squad(v1_em=75.8, v2_em=70.1)),
    ),
    "base": (
        PaperRow("ELECTRA-Base, 766K steps (paper)", "paper Table 1 (GLUE dev average) and Table 4 (SQuAD dev)",
                 766_000, _glue(*[None] * 8), 85.1, _squad(84.5, 90.8, 80.5, 83.3)),
        PaperRow("ELECTRA-Base++ released (trained with more compute)", _README, 0,
                 _glue(67.7, 95.1, 89.5, 91.2, 91.5, 88.8, 93.2, 82.7), None, _squad(v1_em=86.8, v2_em=80.5)),
    ),
    "large": (
        PaperRow("ELECTRA-400K (paper)", "paper Table 2 (GLUE dev) and Table 4 (SQuAD dev)", 400_000,
                 _glue(69.3, 96.0, 90.6, 92.1, 92.4, 90.5, 94.5, 86.8), 89.0, _squad(88.7, 94.2, 86.9, 89.6)),
        PaperRow("ELECTRA-1.75M (paper; the released Large)", "paper Table 2 (GLUE dev) and Table 4 (SQuAD dev)",
                 1_750_000, _glue(69.1, 96.9, 90.8, 92.6, 92.4, 90.9, 95.0, 88.0), 89.5,
                 _squad(89.7, 94.9, 88.0, 90.6)),
    ),
}


def rows_for(size: str) -> tuple[PaperRow, PaperRow]:
    """(paper row, released row) of a size; sizes the paper has no row for (tiny, custom) compare with Small."""
    paper, released = ROWS.get(size, ROWS["small"])
    if size not in ROWS:
        note = f" (nearest to size {size!r})"
        paper = dataclasses.replace(paper, label=paper.label + note)
        released = dataclasses.replace(released, label=released.label + note)
    return paper, released


def glue_average(tasks: dict[str, dict]) -> float | None:
    """The paper's GLUE score from a report's task entries: the mean primary score of the eight tasks
    (MNLI matched), or None unless all eight were evaluated."""
    keys = {"mnli": "mnli_m"}
    values = []
    for k in GLUE_KEYS:
        entry = tasks.get(keys.get(k, k))
        if not entry:
            return None
        values.append(entry["median"][entry["primary"]])
    return sum(values) / len(values)
