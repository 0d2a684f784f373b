"""Fine-tuning pieces: layer-wise LR decay groups, SQuAD windows, answer post-processing."""

import numpy as np
import pytest
import torch
from transformers import ElectraConfig, ElectraForSequenceClassification

from evaluation.config import FinetuneConfig
from evaluation.finetune import layer_depth, llrd_param_groups, load_for_finetuning
from evaluation.model_io import ModelError
from evaluation.qa_features import windows
from evaluation.qa_postprocess import postprocess
from evaluation.testing import tiny_tokenizer


def test_layer_depths_follow_the_official_code():
    assert layer_depth("electra.embeddings.word_embeddings.weight", 12) == 0
    assert layer_depth("electra.embeddings_project.weight", 12) == 0
    assert layer_depth("electra.encoder.layer.0.attention.self.query.weight", 12) == 1
    assert layer_depth("electra.encoder.layer.11.output.dense.bias", 12) == 12
    assert layer_depth("classifier.out_proj.weight", 12) == 14


def test_llrd_groups_lr_and_weight_decay():
    cfg = ElectraConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=32)
    model = ElectraForSequenceClassification(cfg)
    groups = llrd_param_groups(model, lr=1e-4, decay=0.8, weight_decay=0.01)
    by_name = {n: g for g in groups for n in g["names"]}
    assert len(by_name) == sum(1 for _ in model.parameters())  # every parameter exactly once
    n = 3
    assert by_name["electra.embeddings.word_embeddings.weight"]["lr"] == pytest.approx(1e-4 * 0.8 ** (n + 2))
    assert by_name["electra.encoder.layer.2.output.dense.weight"]["lr"] == pytest.approx(1e-4 * 0.8 ** 2)
    assert by_name["classifier.out_proj.weight"]["lr"] == pytest.approx(1e-4)
    assert by_name["classifier.out_proj.bias"]["weight_decay"] == 0.0
    assert by_name["electra.encoder.layer.0.output.LayerNorm.weight"]["weight_decay"] == 0.0
    assert by_name["electra.encoder.layer.0.output.dense.weight"]["weight_decay"] == 0.01


def test_fine_tuning_load_accepts_a_new_head_and_refuses_missing_encoder_weights(tmp_path, caplog):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForQuestionAnswering, ElectraForPreTraining

    cfg = ElectraConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32)
    ElectraForPreTraining(cfg).save_pretrained(tmp_path / "disc")
    with caplog.at_level("INFO", logger="evaluation"):
        model = load_for_finetuning(AutoModelForQuestionAnswering, str(tmp_path / "disc"))
    assert type(model).__name__ == "ElectraForQuestionAnswering"
    assert "new ElectraForQuestionAnswering head initialised (qa_outputs.bias, qa_outputs.weight)" in caplog.text
    assert "LOAD REPORT" not in caplog.text

    weights = tmp_path / "disc" / "model.safetensors"
    sd = load_file(weights)
    del sd["electra.encoder.layer.1.output.dense.weight"]
    save_file(sd, weights, metadata={"format": "pt"})
    with pytest.raises(ModelError, match="1 encoder tensors missing .*electra.encoder.layer.1.output.dense.weight"):
        load_for_finetuning(ElectraForSequenceClassification, str(tmp_path / "disc"), num_labels=2)


CONTEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
           "a region in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer([CONTEXT, "In what country is Normandy located?"] * 5, vocab_size=200)


def test_windows_label_the_answer_tokens(tok):
    start = CONTEXT.index("Denmark")
    ex = {"id": "q", "question": "  Where did the raiders come from?", "context": CONTEXT,
          "answers": {"text": ["Denmark"], "answer_start": [start]}}
    ft = FinetuneConfig(squad_max_seq_length=32, doc_stride=8, max_query_length=6)
    feats, offsets = windows(ex, tok, ft)
    assert len(feats) > 1  # the context does not fit one window of 32
    assert len(feats[0]["input_ids"]) == 32 and len(feats[-1]["input_ids"]) < 32  # unpadded: the collator pads
    for f, o in zip(feats, offsets):
        assert list(f["context_mask"]) == [int(x is not None) for x in o] and f["is_impossible"] == 0
    hits = [(f, o) for f, o in zip(feats, offsets) if f["start_positions"] > 0]
    assert hits, "some window must contain the answer"
    for f, o in hits:
        span = CONTEXT[o[f["start_positions"]][0]:o[f["end_positions"]][1]]
        assert span.lower() == "denmark"
    # windows start doc_stride context tokens apart (the official meaning of doc stride)
    first_ctx = [next(i for i, x in enumerate(o) if x is not None) for o in offsets]
    starts = [o[i][0] for o, i in zip(offsets, first_ctx)]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # the question is cut to max_query_length tokens: [CLS] + 6 + [SEP] before the context
    assert all(i == 8 for i in first_ctx)


def test_postprocess_picks_best_span_and_null():
    examples = [{"id": "a", "context": "red green blue"}, {"id": "b", "context": "red green blue"}]
    offsets = [[None, (0, 3), (4, 9), (10, 14)]] * 2
    start = np.array([[0.0, 1.0, 5.0, 0.0], [9.0, 1.0, 2.0, 0.0]])
    end = np.array([[0.0, 0.0, 1.0, 4.0], [9.0, 0.0, 1.0, 0.5]])
    preds, na = postprocess(examples, [0, 1], offsets, start, end, n_best=20, max_answer_length=30, version_2=True)
    assert preds == {"a": "green blue", "b": ""}  # a: span (2,3) = 9 beats null 0; b: null 18 beats 3
    assert na["a"] < 0.5 < na["b"]
    preds_v1, _ = postprocess(examples, [0, 1], offsets, start, end, n_best=20, max_answer_length=30,
                              version_2=False)
    assert preds_v1["b"] == "green"  # SQuAD 1.1 always answers: best span (2, 2) = 3


def test_unordered_pairs_are_doubled(monkeypatch, tok):
    """MRPC and STS-B also train on swapped pairs (official `double_unordered`); RTE does not."""
    from evaluation import glue_task
    from evaluation.tasks import TASKS

    seen = {}

    class Stop(Exception):
        pass

    def fake_encode(rows, task, tokenizer, max_len):
        seen.setdefault(task.name, rows)
        raise Stop

    monkeypatch.setattr(glue_task, "encode", fake_encode)
    monkeypatch.setattr(glue_task, "load_for_finetuning", lambda *a, **k: None)
    rows = [{"sentence1": "a", "sentence2": "b", "label": 1}]
    for name in ("mrpc", "rte"):
        with pytest.raises(Stop):
            glue_task.run_glue_seed(TASKS[name], {"train": rows}, "m", tok, FinetuneConfig(), lr=1e-4,
                                    layer_decay=0.8, seed=1, use_cpu=True)
    assert seen["mrpc"] == rows + [{"sentence1": "b", "sentence2": "a", "label": 1}]
    assert seen["rte"] == rows
