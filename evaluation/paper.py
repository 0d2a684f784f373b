"""Published ELECTRA dev-set scores, the row each report is compared with.

Source: Clark et al., "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than
Generators" (ICLR 2020), as transcribed in `shared/reference/ELECTRA.md`, table "Published
results to compare against (dev sets)". Scale 0-100. None = not published ("–").
CoLA is Matthews corr., STS-B Spearman, SQuAD EM and F1, the rest accuracy; the single
MNLI number is compared with both matched and mismatched.
"""

from __future__ import annotations

_COLUMNS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte",
            "squad_v1_exact", "squad_v1_f1", "squad_v2_exact", "squad_v2_f1")

PAPER_ROWS: dict[str, tuple[str, tuple[float | None, ...]]] = {
    "small": ("ELECTRA-Small (released)", (57.0, 91.2, 88.0, 87.5, 89.0, 81.3, 88.4, 66.7, 75.8, None, 70.1, None)),
    "base": ("ELECTRA-Base (released)", (67.7, 95.1, 89.5, 91.2, 91.5, 88.8, 93.2, 82.7, 86.8, None, 80.5, None)),
    "large": ("ELECTRA-Large 1.75M", (69.1, 96.9, 90.8, 92.6, 92.4, 90.9, 95.0, 88.0, 89.7, 94.9, 88.0, 90.6)),
}


def paper_row(size: str) -> tuple[str, dict[str, float | None]]:
    """(label, {column: score}) of the paper row for a model size; unknown sizes compare with Small."""
    label, values = PAPER_ROWS.get(size, PAPER_ROWS["small"])
    if size not in PAPER_ROWS:
        label += f" (nearest to size {size!r})"
    return label, dict(zip(_COLUMNS, values))


def paper_scores(row: dict[str, float | None], result_key: str, primary: str) -> dict[str, float | None]:
    """{metric: paper number or None} for a results entry (`cola`, `mnli_mm`, `squad_v2`...).

    GLUE has one paper number per task (its primary metric); SQuAD has EM and F1.
    """
    if result_key.startswith("squad"):
        return {m: row.get(f"{result_key}_{m}") for m in ("exact", "f1")}
    return {primary: row.get(result_key.split("_")[0])}  # mnli_m / mnli_mm -> mnli
