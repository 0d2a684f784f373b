"""Task heads of the official ELECTRA fine-tuning code, on top of the pretrained discriminator.

GLUE (`finetune/classification/classification_tasks.py`): dropout, then one dense layer on the
[CLS] vector; cross-entropy, or squared error for STS-B. (HF's ElectraForSequenceClassification
puts a second dense + GELU layer in between: a head ELECTRA was never scored with.)

SQuAD (`finetune/qa/qa_tasks.py`, joint prediction + answerability classifier):
- start logits from one dense layer, masked to the context and [CLS] (-1000 elsewhere);
- end logits conditioned on the start: a 512-wide GELU dense layer over [start token's vector ;
  each position's vector], then one logit per position, masked the same way. Training conditions
  on the gold start; inference on each of the `beam` best starts (log-softmax), keeping the
  `beam` best ends of each;
- an answerability classifier over [CLS ; start-probability-weighted average of the sequence]
  through a 512-wide GELU layer; its logit is the no-answer score, its sigmoid cross-entropy
  against "is impossible" enters the loss with weight 0.5;
- loss = (start CE + end CE) / 2 + 0.5 * answerability BCE.

Both are `ElectraPreTrainedModel`s: `save_pretrained(dir)` writes config.json (with the head's
settings) and the weights, `ElectraForSquad.from_pretrained(dir)` reloads them without the hub.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from transformers import ElectraConfig, ElectraModel, ElectraPreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

QA_HIDDEN = 512  # width of the end-logit and answerability layers in the official code
ANSWERABLE_WEIGHT = 0.5  # official `answerable_weight`
BEAM = 20  # official `beam_size`: start candidates, and end candidates per start, kept at inference
_MASKED = -1000.0  # what the official code adds to logits outside the context and [CLS]


class _HeadInit(ElectraPreTrainedModel):
    """Head layers start as `tf.layers.dense` does in the official code: Glorot-uniform kernel, zero bias."""

    def _init_weights(self, module):
        if getattr(module, "_task_head", False):
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)


def _head(layer: nn.Linear) -> nn.Linear:
    layer._task_head = True
    return layer


class ElectraForGlue(_HeadInit):
    """Official GLUE head: dropout then one dense layer on the [CLS] vector."""

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.electra = ElectraModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)  # keep_prob 0.9 in the official code
        self.classifier = _head(nn.Linear(config.hidden_size, config.num_labels))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None):
        hidden = self.electra(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        logits = self.classifier(self.dropout(hidden[:, 0]))
        loss = None
        if labels is not None:
            if self.num_labels == 1:  # STS-B: regression on the similarity score
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


@dataclasses.dataclass
class SquadOutput(ModelOutput):
    """Training: loss and the masked start/end logits. Inference: the beam (field order is what Trainer returns)."""

    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None  # [B, L], training only
    end_logits: torch.Tensor | None = None  # [B, L], conditioned on the gold start; training only
    start_top_log_probs: torch.Tensor | None = None  # [B, k]
    start_top_index: torch.Tensor | None = None  # [B, k]
    end_top_log_probs: torch.Tensor | None = None  # [B, k, k]: for start i, its k best ends
    end_top_index: torch.Tensor | None = None  # [B, k, k]
    answerable_logit: torch.Tensor | None = None  # [B]: the no-answer score (high = unanswerable)


BEAM_FIELDS = ("start_top_log_probs", "start_top_index", "end_top_log_probs", "end_top_index", "answerable_logit")


class ElectraForSquad(_HeadInit):
    """ELECTRA's SQuAD head (joint start/end prediction with a start beam, answerability classifier)."""

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        h = config.hidden_size
        self.qa_beam = int(getattr(config, "qa_beam", BEAM))
        self.answerable_weight = float(getattr(config, "answerable_weight", ANSWERABLE_WEIGHT))
        config.qa_beam, config.answerable_weight = self.qa_beam, self.answerable_weight  # saved in config.json
        self.electra = ElectraModel(config)
        self.qa_start = _head(nn.Linear(h, 1))
        self.qa_end_hidden = _head(nn.Linear(2 * h, QA_HIDDEN))  # over [start vector ; position vector]
        self.qa_end = _head(nn.Linear(QA_HIDDEN, 1))
        self.qa_answerable_hidden = _head(nn.Linear(2 * h, QA_HIDDEN))  # over [CLS ; start-weighted average]
        self.qa_answerable = _head(nn.Linear(QA_HIDDEN, 1))
        self.act = nn.GELU()  # exact (erf) GELU, as the official modeling.gelu
        self.post_init()

    def _end_hidden(self, start_vec: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """GELU(W [start ; pos] + b) for every position; the split weight avoids materialising the concat.

        start_vec [..., H] and seq [B, L, H] broadcast to [..., L, QA_HIDDEN].
        """
        h = seq.shape[-1]
        w, b = self.qa_end_hidden.weight, self.qa_end_hidden.bias
        from_start = nn.functional.linear(start_vec, w[:, :h])  # [..., QA_HIDDEN]
        from_pos = nn.functional.linear(seq, w[:, h:], b)  # [B, L, QA_HIDDEN]
        if start_vec.dim() == 3:  # beam: [B, k, H] -> [B, k, 1, QA] + [B, 1, L, QA]
            return self.act(from_start.unsqueeze(2) + from_pos.unsqueeze(1))
        return self.act(from_start.unsqueeze(1) + from_pos)  # training: [B, H] -> [B, L, QA]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, context_mask=None,
                start_positions=None, end_positions=None, is_impossible=None):
        seq = self.electra(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        length = seq.shape[1]
        answer_mask = context_mask.to(seq.dtype).clone()
        answer_mask[:, 0] = 1.0  # [CLS] stands for "no answer"
        penalty = _MASKED * (1.0 - answer_mask)
        start_logits = self.qa_start(seq).squeeze(-1) + penalty
        start_log_probs = torch.log_softmax(start_logits.float(), dim=-1)

        # Answerability: [CLS ; sum_j p_start(j) h_j] -> GELU layer -> one logit.
        start_p = torch.softmax(start_logits.float(), dim=-1).to(seq.dtype)
        pooled = torch.cat([seq[:, 0], torch.einsum("bl,blh->bh", start_p, seq)], dim=-1)
        answerable_logit = self.qa_answerable(self.act(self.qa_answerable_hidden(pooled))).squeeze(-1)

        if start_positions is not None:  # training: end conditioned on the gold start
            start_vec = seq[torch.arange(seq.shape[0], device=seq.device), start_positions]
            end_logits = self.qa_end(self._end_hidden(start_vec, seq)).squeeze(-1) + penalty
            ce = nn.functional.cross_entropy
            loss = (ce(start_logits.float(), start_positions) + ce(end_logits.float(), end_positions)) / 2
            if is_impossible is not None:
                bce = nn.functional.binary_cross_entropy_with_logits(answerable_logit.float(), is_impossible.float())
                loss = loss + self.answerable_weight * bce
            return SquadOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                               answerable_logit=answerable_logit)

        k = min(self.qa_beam, length)
        top_lp, top_i = start_log_probs.topk(k, dim=-1)  # [B, k]
        start_vecs = torch.gather(seq, 1, top_i.unsqueeze(-1).expand(-1, -1, seq.shape[-1]))  # [B, k, H]
        end_logits = self.qa_end(self._end_hidden(start_vecs, seq)).squeeze(-1) + penalty.unsqueeze(1)  # [B, k, L]
        end_lp, end_i = torch.log_softmax(end_logits.float(), dim=-1).topk(k, dim=-1)  # [B, k, k]
        return SquadOutput(start_top_log_probs=top_lp, start_top_index=top_i, end_top_log_probs=end_lp,
                           end_top_index=end_i, answerable_logit=answerable_logit.float())


def glue_model_class(kind: str):
    """The model class of a GLUE head option: official ELECTRA, or HF's two-layer head."""
    from transformers import AutoModelForSequenceClassification

    return ElectraForGlue if kind == "electra" else AutoModelForSequenceClassification


def squad_model_class(kind: str):
    """The model class of a SQuAD head option: official ELECTRA, or HF's independent start/end head."""
    from transformers import AutoModelForQuestionAnswering

    return ElectraForSquad if kind == "electra" else AutoModelForQuestionAnswering
