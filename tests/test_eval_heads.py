"""The official ELECTRA task heads, their post-processing, warmup and progress lines, on a tiny model."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ElectraConfig

from evaluation import squad_metrics
from evaluation.config import FinetuneConfig
from evaluation.heads import BEAM_FIELDS, ElectraForGlue, ElectraForSquad
from evaluation.qa_postprocess import max_context_positions, postprocess_beam
from evaluation.squad_data import to_official

DATA = Path(__file__).parent / "data"


def tiny_config(**kw) -> ElectraConfig:
    return ElectraConfig(vocab_size=60, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, **kw)


def test_default_glue_head_is_one_dense_layer_on_cls():
    from transformers import AutoModelForSequenceClassification

    from evaluation.heads import glue_model_class

    assert glue_model_class(FinetuneConfig().glue_head) is ElectraForGlue  # the default
    model = ElectraForGlue(tiny_config(num_labels=3)).eval()
    head = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.startswith("electra.")]
    assert [(n, m.in_features, m.out_features) for n, m in head] == [("classifier", 16, 3)]
    assert any(isinstance(m, torch.nn.Dropout) for n, m in model.named_children())
    # It reads [CLS] only: changing every other position's final hidden state leaves the logits alone.
    ids = torch.randint(5, 60, (2, 7))
    with torch.no_grad():
        logits = model(input_ids=ids).logits

        def scramble(module, args, out):
            out.last_hidden_state[:, 1:] += 100.0 * torch.randn_like(out.last_hidden_state[:, 1:])
            return out

        handle = model.electra.register_forward_hook(scramble)
        scrambled = model(input_ids=ids).logits
        handle.remove()
    assert logits.shape == (2, 3) and torch.equal(logits, scrambled)
    # HF's head (the option) has two dense layers.
    hf = AutoModelForSequenceClassification.from_config(tiny_config(num_labels=3))
    assert sum(isinstance(m, torch.nn.Linear) for n, m in hf.named_modules() if not n.startswith("electra.")) == 2


@pytest.fixture(scope="module")
def squad_batch():
    torch.manual_seed(0)
    b, length = 3, 14
    ids = torch.randint(5, 60, (b, length))
    attn = torch.ones(b, length, dtype=torch.long)
    attn[2, 11:] = 0  # a padded window
    context = torch.zeros(b, length, dtype=torch.long)
    context[:, 6:13] = 1  # [CLS] q q q q [SEP] c c c c c c c [SEP]
    context[2, 11:] = 0
    return {"input_ids": ids, "attention_mask": attn, "token_type_ids": context.clone(), "context_mask": context}


def test_squad_head_shapes_and_masking(squad_batch):
    model = ElectraForSquad(tiny_config()).eval()
    model.qa_beam = 5
    ctx = squad_batch["context_mask"].bool()
    allowed = ctx.clone()
    allowed[:, 0] = True  # [CLS] = no answer
    with torch.no_grad():
        train = model(**squad_batch, start_positions=torch.tensor([0, 7, 6]), end_positions=torch.tensor([0, 9, 6]),
                      is_impossible=torch.tensor([1, 0, 0]))
        beam = model(**squad_batch)
    assert train.loss.ndim == 0 and train.start_logits.shape == train.end_logits.shape == (3, 14)
    for logits in (train.start_logits, train.end_logits):
        assert (logits[~allowed] < -500).all() and (logits[allowed] > -500).all()
    assert beam.start_top_index.shape == beam.start_top_log_probs.shape == (3, 5)
    assert beam.end_top_index.shape == beam.end_top_log_probs.shape == (3, 5, 5)
    assert beam.answerable_logit.shape == (3,)
    for b in range(3):  # every start and end candidate is a context token or [CLS]
        ok = set(torch.nonzero(allowed[b]).flatten().tolist())
        assert set(beam.start_top_index[b].tolist()) <= ok and set(beam.end_top_index[b].flatten().tolist()) <= ok
    # The beam is sorted and its log-probabilities are normalised over the allowed positions.
    assert (beam.start_top_log_probs.diff(dim=-1) <= 0).all() and (beam.start_top_log_probs <= 0).all()


def test_squad_answerability_loss_term(squad_batch):
    """loss = (start CE + end CE) / 2 + 0.5 * BCE(answerable logit, is_impossible)."""
    model = ElectraForSquad(tiny_config()).eval()
    pos = {"start_positions": torch.tensor([0, 7, 6]), "end_positions": torch.tensor([0, 9, 6])}
    with torch.no_grad():
        base = model(**squad_batch, **pos)  # no answerability labels: the span loss alone
        possible = model(**squad_batch, **pos, is_impossible=torch.tensor([0, 0, 0]))
        impossible = model(**squad_batch, **pos, is_impossible=torch.tensor([1, 1, 1]))
    logit = base.answerable_logit
    bce0 = torch.nn.functional.softplus(logit).mean()  # BCE against 0
    assert possible.loss.item() == pytest.approx(base.loss.item() + 0.5 * bce0.item(), rel=1e-5)
    # BCE(x, 1) - BCE(x, 0) = -x: the term pushes the logit up for unanswerable questions.
    assert (impossible.loss - possible.loss).item() == pytest.approx(-0.5 * logit.mean().item(), abs=1e-5)
    # The span loss is the mean of start and end cross-entropy over the masked logits.
    ce = torch.nn.functional.cross_entropy
    expected = (ce(base.start_logits, pos["start_positions"]) + ce(base.end_logits, pos["end_positions"])) / 2
    assert base.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_squad_model_saves_and_reloads(squad_batch, tmp_path):
    model = ElectraForSquad(tiny_config(qa_beam=4)).eval()
    model.save_pretrained(tmp_path / "qa")
    again = ElectraForSquad.from_pretrained(tmp_path / "qa").eval()  # no hub: config.json + weights
    assert again.qa_beam == 4 and again.answerable_weight == 0.5
    with torch.no_grad():
        a, b = model(**squad_batch), again(**squad_batch)
    for f in BEAM_FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f


CONTEXT = "red green blue yellow"
OFFS = [None, None, (0, 3), (4, 9), (10, 14), (15, 21), None]  # [CLS] q c c c c [SEP]


def _beam(starts, start_lp, ends, end_lp, null):
    return {"start_top_log_probs": np.array(start_lp, dtype=float), "start_top_index": np.array(starts),
            "end_top_log_probs": np.array(end_lp, dtype=float), "end_top_index": np.array(ends),
            "answerable_logit": np.array(null, dtype=float)}


def test_beam_postprocess_gives_official_predictions_and_na_probs():
    examples = [{"id": "a", "question": "which?", "context": CONTEXT, "answers": {"text": ["green blue"], "answer_start": [4]}},
                {"id": "b", "question": "which?", "context": CONTEXT, "answers": {"text": [], "answer_start": []}}]
    beam = _beam(
        starts=[[0, 3, 2], [3, 2, 0]], start_lp=[[-0.1, -1.0, -2.0], [-0.5, -1.5, -2.0]],
        # a: from [CLS] nothing counts; start 3 -> end 2 (before the start) has the best score and is skipped,
        # then end 4 ("green blue"); b: start 3 -> end 6 is [SEP] (not context) and skipped, then end 3 ("green").
        ends=[[[0, 1, 2], [2, 4, 3], [2, 3, 5]], [[6, 3, 4], [2, 5, 4], [0, 0, 0]]],
        end_lp=[[[-0.1, -0.2, -0.3], [-0.1, -0.5, -0.9], [-3.0, -3.0, -3.0]],
                [[-0.1, -0.4, -0.6], [-0.2, -0.3, -0.9], [-9, -9, -9]]],
        null=[-5.0, 3.0])
    preds, na = postprocess_beam(examples, [0, 1], [OFFS, OFFS], beam, max_answer_length=30, version_2=True)
    assert preds == {"a": "green blue", "b": "green"}  # ELECTRA always answers; abstaining is the threshold's job
    assert na["a"] == pytest.approx(1 / (1 + math.exp(5.0))) and na["b"] == pytest.approx(1 / (1 + math.exp(-3.0)))
    # squad_metrics scores them as the official script would, with the official -2.75 logit threshold.
    out = squad_metrics.squad_v2(to_official(examples), preds, na, na_prob_thresh=1 / (1 + math.exp(2.75)))
    assert out["exact"] == 100.0 and out["HasAns_exact"] == 100.0 and out["NoAns_exact"] == 100.0
    assert out["best_exact"] == 100.0
    # A length limit of one token drops "green blue": the next best span of a is "blue".
    short, _ = postprocess_beam(examples, [0, 1], [OFFS, OFFS], beam, max_answer_length=1, version_2=True)
    assert short["a"] in {"green", "blue"} and len(short["a"].split()) == 1


def test_max_context_picks_the_window_where_a_token_is_most_central():
    # One context of 6 tokens seen by two windows: tokens 0-3 and tokens 2-5 (char starts 0, 2, 4, ...).
    w1 = [None] + [(2 * i, 2 * i + 1) for i in range(0, 4)] + [None]
    w2 = [None] + [(2 * i, 2 * i + 1) for i in range(2, 6)] + [None]
    first, second = max_context_positions([w1, w2])
    # Doc tokens 2 and 3 are in both: token 2 sits 2 from w1's left edge but 1 from its right (score 1.04),
    # 0 from w2's left (0.04): w1 wins; token 3: w1 min(3, 0) = 0.04, w2 min(1, 2) = 1.04: w2 wins.
    assert first == {1, 2, 3} and second == {2, 3, 4}


def test_finetuning_warmup_and_progress_lines(tiny_model, caplog):
    """20 steps: warmup is 2 steps (10%), the rate rises below the peak then reaches it, and every line has an ETA."""
    from transformers import AutoTokenizer

    from evaluation.glue_data import load
    from evaluation.glue_task import run_glue_seed
    from evaluation.progress import EvalProgress, PlannedRun
    from evaluation.tasks import TASKS

    task = TASKS["rte"]
    ft = FinetuneConfig(max_steps=20, batch_size=4, progress_every_pct=5.0)
    model_dir = str(Path(tiny_model) / "discriminator")
    progress = EvalProgress([PlannedRun("rte", 1, 20, 20.0)], ft.progress_every_pct)
    with caplog.at_level("INFO", logger="evaluation"):
        progress.start()
        scores = run_glue_seed(task, load(task, str(DATA)), model_dir, AutoTokenizer.from_pretrained(model_dir), ft,
                               lr=1e-4, layer_decay=0.8, seed=1, use_cpu=True, progress=progress.run("rte", 1))
        progress.finish("rte", 1, scores, "accuracy", 1.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "evaluation.progress"]
    step_re = re.compile(r"^fine-tuning rte seed 1: step (\d+)/20 \(\d+%\) \| loss [\d.]+ \| lr ([\d.e+-]+) \| "
                         r"elapsed \d+m\d\ds ETA \d+m\d\ds \| overall \d+% ETA \d+m\d\ds$")
    steps = {int(m.group(1)): float(m.group(2)) for m in map(step_re.match, lines) if m}
    assert sorted(steps) == list(range(1, 21)), lines  # 5% of 20 steps: a line every step, each with an ETA
    peak = 1e-4
    assert steps[1] < peak  # still warming up after the first step
    assert steps[2] == pytest.approx(peak, rel=1e-3)  # 10% of 20 steps: the peak
    assert steps[3] < peak and steps[20] == pytest.approx(0.0, abs=1e-12)  # then linear decay to 0
    done = [ln for ln in lines if ln.startswith("rte seed 1 done in")]
    assert len(done) == 1 and "accuracy" in done[0] and "overall 1/1 runs (100%)" in done[0]
    events = [r.eval_progress for r in caplog.records if hasattr(r, "eval_progress")]
    assert events[-1].fraction == 1.0 and all(0.0 <= e.fraction <= 1.0 for e in events)


def test_tier_cost_table_follows_the_cost_model():
    from evaluation import cost
    from evaluation.tiers import TIERS, Tier
    from pretraining.cost import encoder_flops_per_token
    from pretraining.sizes import electra_large

    rows = {(r.size, r.tier): r for r in cost.table("h100-sxm-bf16", 0.3)}
    for size in ("small", "base", "large"):
        quick, full = rows[(size, "quick")], rows[(size, "full")]
        assert quick.steps == 3 * 1000 and quick.runs == 3  # MNLI, SST-2, SQuAD 2.0 all outgrow 1,000 steps
        assert full.runs == 30 and full.gpu_hours > 20 * quick.gpu_hours and full.gpu_hours_padded > full.gpu_hours
    assert rows[("small", "full")].flops < rows[("base", "full")].flops < rows[("large", "full")].flops
    # One task by hand: RTE, Large, 10 epochs of 2,490 examples in batches of 32, dev 277, ~70 tokens.
    rte = cost.tier_cost("large", Tier("x", ("rte",), 1, -1, ""), peak_flops=989e12, mfu=0.5)
    steps = 10 * -(-2490 // 32)
    assert rte.steps == steps
    flops = (steps * 32 * 70 + 277 * 70 / 3) * encoder_flops_per_token(electra_large(), 70)
    assert rte.flops == pytest.approx(flops) and rte.gpu_hours == pytest.approx(flops / (989e12 * 0.5 * 3600))
    table = cost.markdown(list(rows.values()), "h100-sxm-bf16", 0.3)
    assert table.count("\n| ") == 1 + 6 and "| large | full | 30 |" in table
    assert TIERS["full"].seeds == 3 and TIERS["quick"].seeds == 1
