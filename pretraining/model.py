"""ELECTRA pretraining model: a generator and a discriminator over one shared embeddings module.

Built from transformers' ELECTRA modules (`ElectraEmbeddings`, `ElectraEncoder`, the two prediction
heads), so `to_hf()` / `hf_state_dicts()` only rename keys and published weights load with `AutoModel`.

What differs from stacking `ElectraForMaskedLM` + `ElectraForPreTraining` (see docs/model.md):
- one embeddings module (token, position, type, LayerNorm) that both towers call;
- the generator head runs only at the masked positions (6.5% of ELECTRA-Large's FLOPs otherwise);
- the tied output projection is computed inside the word-embedding module's own forward, so under
  ZeRO-3 the partitioned embedding matrix is gathered by that module's hooks when the head needs it;
- SDPA attention, dynamic masking and Gumbel-max sampling driven by an explicit `torch.Generator`.

    model = electra_small().build()
    out = model(input_ids, attention_mask, token_type_ids, generator=rng)
    out.loss.backward()
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput
from transformers.models.electra.modeling_electra import (
    ElectraDiscriminatorPredictions,
    ElectraEmbeddings,
    ElectraEncoder,
    ElectraGeneratorPredictions,
)

if TYPE_CHECKING:  # sizes.ModelConfig.build() imports this module
    from pretraining.sizes import ModelConfig

# Keys of PretrainingOutput.metrics, all summable across ranks and steps.
METRIC_KEYS = ("gen_correct", "masked", "disc_correct", "disc_tokens", "replaced", "pred_replaced", "true_positive")


@dataclasses.dataclass
class PretrainingOutput(ModelOutput):
    """What `forward` returns. A `ModelOutput` (a dict) so DeepSpeed's ZeRO-3 hooks can see the tensors in it;
    every field is always set (the None defaults are ModelOutput's rule, not optional values)."""

    loss: torch.Tensor = None  # mlm_loss + rtd_weight * rtd_loss: the one to backward
    mlm_loss: torch.Tensor = None  # generator cross-entropy, mean over masked positions
    rtd_loss: torch.Tensor = None  # discriminator binary cross-entropy, mean over non-padding positions
    metrics: dict[str, torch.Tensor] = None  # detached int64 counts (METRIC_KEYS); sum, then derived_metrics()
    disc_logits: torch.Tensor = None  # detached [batch, seq] replaced-token logits: validation's AUC ranks them
    replaced: torch.Tensor = None  # bool [batch, seq]: the discriminator's labels (padding False)


class TiedWordEmbeddings(nn.Embedding):
    """The token embedding matrix, which also computes the generator's tied output projection.

    Under ZeRO-3 a parameter is only materialised while a module that owns it runs its forward;
    anywhere else it is an empty partition. Doing the projection here (`project=True`) means
    DeepSpeed's own hooks gather the matrix for it in forward and again for backward, with no
    external-parameter bookkeeping.
    """

    def forward(self, input: torch.Tensor, *, project: bool = False) -> torch.Tensor:
        if project:
            return F.linear(input, self.weight)
        return super().forward(input)


class SharedEmbeddings(ElectraEmbeddings):
    """transformers' ELECTRA embeddings (token + position + type, LayerNorm, dropout) with a tied word matrix."""

    def __init__(self, hf_config: ElectraConfig):
        super().__init__(hf_config)
        self.word_embeddings = TiedWordEmbeddings(hf_config.vocab_size, hf_config.embedding_size,
                                                  padding_idx=hf_config.pad_token_id)


class Tower(nn.Module):
    """One transformer stack: the projection from the shared embedding width (when it differs) and the encoder.

    Attribute names match `ElectraModel`'s, so the weights map onto it by prefix.
    """

    def __init__(self, hf_config: ElectraConfig):
        super().__init__()
        if hf_config.embedding_size != hf_config.hidden_size:
            self.embeddings_project = nn.Linear(hf_config.embedding_size, hf_config.hidden_size)
        self.encoder = ElectraEncoder(hf_config)

    def forward(self, embeddings: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if hasattr(self, "embeddings_project"):
            embeddings = self.embeddings_project(embeddings)
        return self.encoder(embeddings, attention_mask=attention_mask).last_hidden_state


class GeneratorHead(nn.Module):
    """dense + gelu + LayerNorm (`ElectraGeneratorPredictions`), then the tied projection plus an output bias."""

    def __init__(self, hf_config: ElectraConfig):
        super().__init__()
        self.transform = ElectraGeneratorPredictions(hf_config)
        self.bias = nn.Parameter(torch.zeros(hf_config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: TiedWordEmbeddings) -> torch.Tensor:
        return word_embeddings(self.transform(hidden), project=True) + self.bias


@dataclasses.dataclass
class Masking:
    """Which positions the generator predicts, as a fixed number of slots per row (no data-dependent shapes).

    Every row gets `max_picks(seq_len, mask_prob)` slots, the most any row can need; a row with fewer
    maskable positions leaves its extra slots invalid. Fixed shapes keep the step free of host syncs
    (boolean indexing waits for the device to count) and give `torch.compile` one graph.
    """

    masked_ids: torch.Tensor  # [batch, seq] generator input: most picks shown as [MASK]
    picked: torch.Tensor  # [batch, seq] bool: the positions the generator is scored on
    slots: torch.Tensor  # [batch, k] long: a position per slot (invalid slots point at unpicked positions)
    valid: torch.Tensor  # [batch, k] bool: the slot is a real pick


def max_picks(seq_len: int, mask_prob: float) -> int:
    """Slots per row: round(mask_prob x seq_len), at least one (a row has at most seq_len maskable positions)."""
    return max(1, round(seq_len * mask_prob))


def pick_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor, cfg: ModelConfig,
                   generator: torch.Generator | None = None) -> Masking:
    """Pick the positions the generator predicts and hide most of them.

    Each row gets round(mask_prob x its maskable positions) picks (at least one), like the official
    builder's fixed number of predictions per sequence, so the masked count does not wander with
    the random draw. Maskable = not padding and not [CLS]/[SEP]/[MASK] ([UNK] stands for real text
    and is predicted, as in the reference code). Of the picks 85% become [MASK] and 15% keep their
    token; there is no random-token replacement (the generator already supplies replacements).
    """
    device = input_ids.device
    # Compared one id at a time: a tensor of the ids built here would be a host-to-device copy, which waits.
    special = ((input_ids == cfg.pad_token_id) | (input_ids == cfg.cls_token_id) | (input_ids == cfg.sep_token_id)
               | (input_ids == cfg.mask_token_id))
    maskable = attention_mask.bool() & ~special
    counts = maskable.sum(dim=1)
    picks = torch.where(counts > 0, (counts.float() * cfg.mask_prob).round().long().clamp(min=1), 0)
    # A random score per maskable position; the `picks` lowest of each row are masked.
    scores = torch.rand(input_ids.shape, generator=generator, device=device).masked_fill(~maskable, 2.0)
    k = min(input_ids.shape[1], max_picks(input_ids.shape[1], cfg.mask_prob))
    slots = scores.topk(k, dim=1, largest=False, sorted=True).indices
    valid = torch.arange(k, device=device)[None, :] < picks[:, None]
    picked = torch.zeros_like(maskable).scatter_(1, slots, valid)
    hide = torch.rand(input_ids.shape, generator=generator, device=device) < 0.85
    masked_ids = torch.where(picked & hide, torch.full_like(input_ids, cfg.mask_token_id), input_ids)
    return Masking(masked_ids, picked, slots, valid)


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, cfg: ModelConfig,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(generator input ids, bool mask of picked positions): `pick_positions` for code that indexes by mask."""
    m = pick_positions(input_ids, attention_mask, cfg, generator)
    return m.masked_ids, m.picked


def gumbel_sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw from softmax over the last dim for each leading index, by Gumbel-max, in fp32 (bf16 logits would
    round the noise away)."""
    with torch.no_grad():
        noise = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
        # Gumbel(0, 1) = -log(-log(u)), in place ([batch, slots, vocab] is the largest tensor of the step).
        # The clamp keeps log(0) out; u just below 1 still gives a finite value.
        noise.clamp_(min=torch.finfo(torch.float32).tiny).log_().neg_().log_().neg_()
        return noise.add_(logits.detach()).argmax(dim=-1)


def hf_configs(cfg: ModelConfig, attn_implementation: str | None = "config") -> tuple[ElectraConfig, ElectraConfig]:
    """(discriminator, generator) `ElectraConfig`s for a ModelConfig. `attn_implementation=None` leaves the
    choice to transformers (its default for the installed version); "config" takes the ModelConfig's."""
    c = cfg
    attn = c.attn_implementation if attn_implementation == "config" else attn_implementation
    common = dict(vocab_size=c.vocab_size, embedding_size=c.embedding_size, hidden_act="gelu",
                  hidden_dropout_prob=c.hidden_dropout_prob,
                  attention_probs_dropout_prob=c.attention_probs_dropout_prob,
                  max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
                  initializer_range=c.initializer_range, layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id)
    if attn is not None:
        common["attn_implementation"] = attn
    disc = ElectraConfig(hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                         num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                         architectures=["ElectraForPreTraining"], **common)
    gen = ElectraConfig(hidden_size=c.generator_hidden_size, num_hidden_layers=c.num_hidden_layers,
                        num_attention_heads=c.generator_num_attention_heads,
                        intermediate_size=c.generator_intermediate_size, tie_word_embeddings=True,
                        architectures=["ElectraForMaskedLM"], **common)
    return disc, gen


class ElectraPretrainingModel(nn.Module):
    """Generator + discriminator for replaced token detection; `forward` returns the loss to backward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        disc_config, gen_config = self.hf_configs()
        self.embeddings = SharedEmbeddings(disc_config)
        self.generator = Tower(gen_config)
        self.generator_head = GeneratorHead(gen_config)
        self.discriminator = Tower(disc_config)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(disc_config)
        self._mask_config = disc_config  # tells create_bidirectional_mask which attention kernel the mask is for
        self.init_weights()
        if cfg.compile_towers:
            # In place (nn.Module.compile): parameter names and the state dict stay those of the eager model.
            self.generator.compile(dynamic=False)
            self.discriminator.compile(dynamic=False)

    # ----- construction -------------------------------------------------------------------------
    def hf_configs(self) -> tuple[ElectraConfig, ElectraConfig]:
        """(discriminator, generator) transformers configs: the shapes the towers are built with and exported as."""
        return hf_configs(self.cfg)

    @torch.no_grad()
    def init_weights(self) -> None:
        """BERT/ELECTRA init: normal(0, initializer_range) matrices, zero biases, unit LayerNorm.

        Works on partitioned parameters too (built under `deepspeed.zero.Init`): each module's
        parameters are gathered, rank 0 initialises them and DeepSpeed broadcasts the result.
        """
        std = self.cfg.initializer_range
        for module in self.modules():
            params = list(module.parameters(recurse=False))
            if not params:
                continue
            with _gathered(params):
                if isinstance(module, nn.Linear):
                    module.weight.normal_(0.0, std)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.Embedding):
                    module.weight.normal_(0.0, std)
                    if module.padding_idx is not None:
                        module.weight[module.padding_idx].zero_()
                elif isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
                elif isinstance(module, GeneratorHead):
                    module.bias.zero_()

    # ----- the two towers -----------------------------------------------------------------------
    def attention_bias(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The padding mask in the form the attention kernel wants.

        SDPA gets the boolean key mask [batch, 1, 1, seq], broadcast over heads and queries by the kernel
        (the memory-efficient one takes it; no [seq, seq] bias is built). On a GPU it is always passed:
        checking whether a batch has padding (to drop the mask for the flash kernel) reads the device from
        the host, and with 5% short rows most batches of 32 are padded anyway. On CPU that check is free,
        and an unpadded batch gets None. Other kernels get transformers' mask.
        """
        if self._mask_config._attn_implementation == "sdpa":
            if attention_mask.device.type == "cpu" and bool(attention_mask.all()):
                return None  # read on the host at no cost (a GPU tensor would make it wait): SDPA's unmasked path
            return attention_mask.bool()[:, None, None, :]
        return create_bidirectional_mask(config=self._mask_config, inputs_embeds=embeddings,
                                         attention_mask=attention_mask)

    def generator_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         token_type_ids: torch.Tensor) -> torch.Tensor:
        """The generator tower's last hidden states [batch, seq, generator_hidden]."""
        emb = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self.generator(emb, self.attention_bias(emb, attention_mask))

    def generator_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                         positions: torch.Tensor | None = None) -> torch.Tensor:
        """Generator vocabulary logits at `positions` (bool [batch, seq]) as [n, vocab]; all positions if None.

        For export checks and probes; the training forward gathers fixed slots instead (no host sync).
        """
        hidden = self.generator_hidden(input_ids, attention_mask, token_type_ids)
        hidden = hidden.reshape(-1, hidden.shape[-1]) if positions is None else hidden[positions]
        return self.generator_head(hidden, self.embeddings.word_embeddings)

    def discriminator_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             token_type_ids: torch.Tensor) -> torch.Tensor:
        """Replaced-token logits [batch, seq] (> 0 means "replaced")."""
        emb = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        hidden = self.discriminator(emb, self.attention_bias(emb, attention_mask))
        return self.discriminator_predictions(hidden)

    # ----- the objective ------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor, *,
                generator: torch.Generator | None = None) -> PretrainingOutput:
        """Mask, predict, sample, detect.

        `generator` (a `torch.Generator` on the inputs' device; the global RNG if None) drives every
        random draw, so a seeded step repeats exactly. Dropout uses the global RNG as usual. Every
        shape is fixed by the batch's, and nothing reads the device from the host.
        """
        rng = generator
        cfg = self.cfg
        m = pick_positions(input_ids, attention_mask, cfg, rng)
        targets = input_ids.gather(1, m.slots)  # [batch, k]
        valid = m.valid.float()
        n_masked = valid.sum()

        hidden = self.generator_hidden(m.masked_ids, attention_mask, token_type_ids)
        hidden = hidden.gather(1, m.slots[:, :, None].expand(-1, -1, hidden.shape[-1]))  # head on k slots per row
        gen_logits = self.generator_head(hidden, self.embeddings.word_embeddings).float()  # [batch, k, vocab]
        per_slot = F.cross_entropy(gen_logits.flatten(0, 1), targets.flatten(), reduction="none")
        # A batch with nothing maskable gives 0, still reaching every generator parameter.
        mlm_loss = (per_slot * valid.flatten()).sum() / n_masked.clamp(min=1.0)

        sampled = gumbel_sample(gen_logits, rng)  # [batch, k]
        disc_ids = input_ids.scatter(1, m.slots, torch.where(m.valid, sampled, targets))
        real = attention_mask.bool()
        replaced = (disc_ids != input_ids) & real

        disc_logits = self.discriminator_logits(disc_ids, attention_mask, token_type_ids).float()
        weights = real.float()
        per_token = F.binary_cross_entropy_with_logits(disc_logits, replaced.float(), reduction="none")
        rtd_loss = (per_token * weights).sum() / weights.sum().clamp(min=1.0)

        with torch.no_grad():
            predicted = (disc_logits > 0) & real
            metrics = {
                "gen_correct": ((gen_logits.argmax(dim=-1) == targets) & m.valid).sum(),
                "masked": m.valid.sum(),
                "disc_correct": ((predicted == replaced) & real).sum(),
                "disc_tokens": real.sum(),
                "replaced": replaced.sum(),
                "pred_replaced": predicted.sum(),
                "true_positive": (predicted & replaced).sum(),
            }
        metrics = {k: v.detach().to(torch.int64) for k, v in metrics.items()}
        return PretrainingOutput(loss=mlm_loss + cfg.rtd_weight * rtd_loss, mlm_loss=mlm_loss, rtd_loss=rtd_loss,
                                 metrics=metrics, disc_logits=disc_logits.detach(), replaced=replaced)

    # ----- export -------------------------------------------------------------------------------
    @staticmethod
    def hf_state_dicts(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(ElectraForPreTraining, ElectraForMaskedLM) state dicts from this model's full state dict.

        Takes a consolidated one (e.g. DeepSpeed's zero_to_fp32 output); the shared embeddings are
        copied into both and the generator's output matrix is the token embedding matrix.
        """
        disc: dict[str, torch.Tensor] = {}
        gen: dict[str, torch.Tensor] = {}
        for key, value in state_dict.items():
            key = re.sub(r"^(module\.|_orig_mod\.)+", "", key)  # DeepSpeed / torch.compile wrappers
            if key.startswith("embeddings."):
                disc["electra." + key] = value
                gen["electra." + key] = value
            elif key.startswith("discriminator."):
                disc["electra." + key.removeprefix("discriminator.")] = value
            elif key.startswith("discriminator_predictions."):
                disc[key] = value
            elif key.startswith("generator_head.transform."):
                gen["generator_predictions." + key.removeprefix("generator_head.transform.")] = value
            elif key == "generator_head.bias":
                gen["generator_lm_head.bias"] = value
            elif key.startswith("generator."):
                gen["electra." + key.removeprefix("generator.")] = value
            else:
                raise KeyError(f"unexpected key {key!r} in an ElectraPretrainingModel state dict")
        gen["generator_lm_head.weight"] = gen["electra.embeddings.word_embeddings.weight"]
        return disc, gen

    def to_hf(self) -> tuple[ElectraForPreTraining, ElectraForMaskedLM]:
        """transformers models holding copies of this model's weights, fp32 on CPU, in eval mode.

        Under ZeRO-3 the partitioned parameters are gathered first, which is a collective: call it on
        every rank (and only where the whole model fits in memory; otherwise export from the
        consolidated checkpoint with `hf_state_dicts`).
        """
        disc_config, gen_config = self.hf_configs()
        with _gathered(list(self.parameters()), modifier_rank=None):
            full = {k: v.detach().float().cpu().clone() for k, v in self.state_dict().items()}
        disc_sd, gen_sd = self.hf_state_dicts(full)
        disc, gen = ElectraForPreTraining(disc_config), ElectraForMaskedLM(gen_config)
        for model, sd in ((disc, disc_sd), (gen, gen_sd)):
            missing, unexpected = model.load_state_dict(sd, strict=False)
            missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
            if missing or unexpected:
                raise RuntimeError(f"{type(model).__name__}: missing {missing}, unexpected {unexpected}")
            model.eval()
        return disc, gen


def derived_metrics(sums: dict[str, float]) -> dict[str, float]:
    """gen_acc, disc_acc, disc_precision and disc_recall (on replaced tokens) from summed counts."""

    def ratio(a: str, b: str) -> float:
        den = float(sums.get(b, 0))
        return float(sums.get(a, 0)) / den if den else 0.0

    return {
        "gen_acc": ratio("gen_correct", "masked"),
        "disc_acc": ratio("disc_correct", "disc_tokens"),
        "disc_precision": ratio("true_positive", "pred_replaced"),
        "disc_recall": ratio("true_positive", "replaced"),
    }


def _gathered(params: list[nn.Parameter], modifier_rank: int | None = 0):
    """Gather ZeRO-3 partitioned parameters (for an in-place edit by `modifier_rank`, whose values
    are then scattered back; None to read only); a no-op for ordinary parameters."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)
    return contextlib.nullcontext()
