"""An evaluation run: check everything, fine-tune every task for every seed, report the medians.

All checks that can fail on user input (task names, model layout, tokenizer, data files) run
before the first training step, so a typo costs seconds, not a GPU-hour.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import random
import statistics
import tempfile
import time

from common import manifest, storage
from evaluation import glue_data, model_io, paper, report, squad_data, tasks, tiers
from evaluation.config import EvalConfig, recipe
from evaluation.finetune import train_steps
from evaluation.glue_data import DataFormatError
from evaluation.glue_task import run_glue_seed, training_rows
from evaluation.progress import EvalProgress, PlannedRun
from evaluation.report import curves
from evaluation.squad_task import run_squad_seed

log = logging.getLogger(__name__)


def load_data(task: tasks.TaskSpec, cfg: EvalConfig) -> dict[str, list[dict]]:
    loader = squad_data if task.kind == "squad" else glue_data
    data = loader.load(task, cfg.data_dir)
    ft = cfg.finetune
    for split, rows in data.items():
        cap = ft.max_train_examples if split == "train" else ft.max_eval_examples
        data[split] = rows[:cap] if cap > 0 else rows
        if not data[split]:
            raise DataFormatError(f"{task.name}: split {split} is empty")
    return data


def load_tokenizer(model_dir: str, need_offsets: bool):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # noqa: BLE001 - any failure here means the tokenizer files are unusable
        raise model_io.ModelError(f"cannot load the tokenizer in {model_dir}: {exc}") from None
    if need_offsets and not tok.is_fast:
        raise model_io.ModelError(f"{model_dir}: SQuAD needs a fast tokenizer (tokenizer.json) for answer offsets")
    return tok


def _median(per_seed: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(statistics.median(s[k] for s in per_seed)) for k in per_seed[0]}


def capped_train(rows: list[dict], ft, cap: int, seed: int) -> list[dict]:
    """A run capped at N steps sees at most N x batch examples: draw those at random (seeded) up front, so a
    quick run tokenizes 32k SQuAD questions rather than 130k. Uncapped runs keep every example."""
    limit = ft.max_steps if ft.max_steps > 0 else cap
    need = limit * ft.batch_size
    if limit <= 0 or len(rows) <= need:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), need))
    return [rows[i] for i in keep]


def plan(specs: list[tasks.TaskSpec], data: dict, cfg: EvalConfig) -> list[PlannedRun]:
    """Every (task, seed) run with its step count and relative work, for the overall ETA."""
    ft, cap = cfg.finetune, tiers.TIERS[cfg.tier].max_steps
    out = []
    for t in specs:
        squad = t.kind == "squad"
        n = len(data[t.name]["train"]) if squad else len(training_rows(t, data[t.name]["train"], ft))
        length = ft.squad_max_seq_length if squad else ft.max_seq_length
        steps = train_steps(n, ft, ft.epochs if ft.epochs is not None else t.epochs, cap)
        n_eval = sum(len(rows) for split, rows in data[t.name].items() if split != "train")
        units = steps * ft.batch_size * length + n_eval * length / 3
        out += [PlannedRun(t.name, s, steps, units) for s in range(cfg.seed_base, cfg.seed_base + cfg.seeds)]
    return out


def _skeleton(cfg: EvalConfig, info: model_io.ModelInfo, lr: float, decay: float) -> dict:
    """results.json without task scores: who was evaluated, when, how, against what."""
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = paper.rows_for(info.size)
    return {"title": cfg.report.title or f"Evaluation of {info.name}", "name": info.name,
            "created": now.isoformat(timespec="seconds"),
            "created_id": now.strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z",  # the report dir; sorts in time order
            "model": {"uri": info.uri, "size": info.size, "step": info.step, "hidden_size": info.hidden_size,
                      "num_layers": info.num_layers, "manifest_hash": (info.manifest or {}).get("manifest_hash")},
            "tier": tiers.TIERS[cfg.tier].describe(), "seeds": cfg.seeds,
            "paper_row": rows[0].label, "paper_rows": [r.describe() for r in rows],
            "learning_rate": lr, "layer_decay": decay,
            "heads": {"glue": cfg.finetune.glue_head, "squad": cfg.finetune.squad_head},
            "config": dataclasses.asdict(cfg), "tasks": {}}


def _entry(t: tasks.TaskSpec, key: str, runs: list[dict], data: dict, paper_row: paper.PaperRow,
           released_row: paper.PaperRow) -> dict:
    """results.json's entry of one result key: median and per-seed scores beside both reference rows."""
    published = paper_row.scores(key, t.primary)  # SQuAD: EM and F1; GLUE: the primary metric
    released = released_row.scores(key, t.primary)
    return {"task": t.name, "primary": t.primary, "metrics": list(t.metrics),
            "median": _median([r["scores"] for r in runs]), "seeds": runs,
            "paper": published.get(t.primary), "paper_metrics": published,
            "released": released.get(t.primary), "released_metrics": released,
            "examples": {split: len(rows) for split, rows in data.items()}}


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation `cfg` describes; returns the report manifest (`report_uri` = where it landed)."""
    # Every check on user input first: a typo must cost seconds, not a fine-tuning run.
    cfg = tiers.resolve(cfg)
    cfg.finetune.check()
    specs = tasks.resolve(list(cfg.tasks))
    info = model_io.inspect(cfg.model, cfg.report.name, cfg.size)
    storage.check_reachable(cfg.output)
    data = {t.name: load_data(t, cfg) for t in specs}
    for name, splits in data.items():
        log.info("%s: %s", name, ", ".join(f"{len(rows)} {split}" for split, rows in splits.items()))

    lr = cfg.finetune.learning_rate or recipe(info.size).learning_rate
    decay = cfg.finetune.layer_decay or recipe(info.size).layer_decay
    paper_row, released_row = paper.rows_for(info.size)
    results = _skeleton(cfg, info, lr, decay)
    cap = tiers.TIERS[cfg.tier].max_steps
    progress = EvalProgress(plan(specs, data, cfg), cfg.finetune.progress_every_pct)
    log.info("tier %s", tiers.TIERS[cfg.tier].summary)
    progress.start()
    keep = cfg.finetune.save_models
    with storage.local_copy(info.hf_uri) as model_dir, tempfile.TemporaryDirectory(prefix="eval-models-") as saved:
        tok = load_tokenizer(model_dir, need_offsets=any(t.kind == "squad" for t in specs))
        for t in specs:
            runner = run_squad_seed if t.kind == "squad" else run_glue_seed
            per_key: dict[str, list[dict]] = {}  # mnli gives two keys (matched, mismatched) per run
            for seed in range(cfg.seed_base, cfg.seed_base + cfg.seeds):
                log.info("fine-tuning %s seed %d", t.name, seed)
                t0 = time.monotonic()
                save_dir = os.path.join(saved, f"{t.name}-seed{seed}") if keep else None
                run_data = {**data[t.name], "train": capped_train(data[t.name]["train"], cfg.finetune, cap, seed)}
                scores = runner(t, run_data, model_dir, tok, cfg.finetune, lr=lr, layer_decay=decay, seed=seed,
                                use_cpu=cfg.device == "cpu", cap=cap, progress=progress.run(t.name, seed),
                                save_dir=save_dir)
                progress.finish(t.name, seed, scores, t.primary, time.monotonic() - t0)
                for key, s in scores.items():
                    per_key.setdefault(key, []).append({"seed": seed, "scores": s})
            for key, runs in per_key.items():
                results["tasks"][key] = _entry(t, key, runs, data[t.name], paper_row, released_row)
        results["glue_average"] = {"ours": paper.glue_average(results["tasks"]), "paper": paper_row.glue_average,
                                   "released": released_row.glue_average}
        inputs = [manifest.input_ref(info.uri, info.manifest)] if info.manifest else []
        return report.write(cfg.output, results, margin=cfg.report.regression_margin, inputs=inputs, config=cfg,
                            pretrain_metrics=curves.find(cfg.report.pretrain_metrics, info.manifest),
                            models_dir=saved if keep else None)
