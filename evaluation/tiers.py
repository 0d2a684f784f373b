"""Evaluation tiers: the full recipe for final reports, a quick check for schedules during pretraining.

`full` fine-tunes the eight GLUE tasks and SQuAD 1.1/2.0 with the paper's recipe over three
seeds: the numbers to compare with the paper, tens of GPU-hours for Large (`evaluation.cost`).

`quick` fine-tunes MNLI, SST-2 and SQuAD 2.0 once each, for at most 1,000 optimizer steps
(32,000 examples at batch 32), and scores the full dev sets. These three track the full score
because
- their dev sets are large (MNLI 9,815 + 9,832, SQuAD 2.0 11,873, SST-2 872 examples), so a
  single seed moves by tenths of a point where RTE (277), MRPC (408) and CoLA (1,043) move by
  points between seeds: a checkpoint-to-checkpoint change of a point or two is signal there;
- their training sets are large, so 32,000 examples are a fraction of an epoch: a capped run is
  a shortened full run, not a different regime (as a capped RTE run of a few hundred examples would be);
- together they cover sentence-pair inference, single-sentence classification and span
  extraction with answerability (on which the paper finds ELECTRA comparatively stronger than on
  SQuAD 1.1), what the GLUE average and the SQuAD rows measure.
A quick report is only compared with other quick reports (its steps are capped, so its scores
sit below the paper's by design): regressions and the over-steps plots use the same tier only.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Tier:
    name: str
    tasks: tuple[str, ...]  # task names or groups, as on --tasks
    seeds: int  # fine-tuning runs per task (the median is reported)
    max_steps: int  # optimizer steps per run at most; -1: the recipe's epochs
    summary: str  # one line for reports and logs

    def describe(self) -> dict:
        return {"name": self.name, "tasks": list(self.tasks), "seeds": self.seeds, "max_steps": self.max_steps,
                "summary": self.summary}


TIERS: dict[str, Tier] = {
    "full": Tier("full", ("glue", "squad_v1", "squad_v2"), 3, -1,
                 "full: GLUE (8 tasks), SQuAD 1.1 and 2.0, the paper's epochs, median of 3 seeds"),
    "quick": Tier("quick", ("mnli", "sst2", "squad_v2"), 1, 1000,
                  "quick: MNLI, SST-2, SQuAD 2.0, 1 seed, at most 1,000 steps each; "
                  "compare with other quick reports, not with the paper"),
}


def resolve(cfg):
    """`cfg` with the tier's tasks and seeds where it leaves them unset (empty tasks, seeds 0)."""
    tier = TIERS[cfg.tier]
    return dataclasses.replace(cfg, tasks=tuple(cfg.tasks) or tier.tasks, seeds=cfg.seeds or tier.seeds)
