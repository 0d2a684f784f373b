"""Continued pretraining: load a published ELECTRA pair (discriminator + generator) into `ElectraPretrainingModel`.

    --config base init.pretrained=google/electra-base-discriminator init.generator=google/electra-base-generator
    --config small init.pretrained=s3://bucket/models/run-1/step-000100000   # discriminator/ + generator/ inside

A pair is two Hugging Face directories (local, s3://, or hub ids where the hub is reachable):
`ElectraForPreTraining` and `ElectraForMaskedLM`, as Google published them and as
`pretraining.export` writes them. The model's shapes come from their configs, not from the named
size (`pretrained_shapes`). Loading is the inverse of `ElectraPretrainingModel.hf_state_dicts`:

    discriminator  electra.embeddings.*            -> embeddings.*   (shared: token, position, type, LayerNorm)
                   electra.embeddings_project.*    -> discriminator.embeddings_project.*   (when widths differ: Small)
                   electra.encoder.*               -> discriminator.encoder.*
                   discriminator_predictions.*     -> discriminator_predictions.*
    generator      electra.embeddings_project.*    -> generator.embeddings_project.*
                   electra.encoder.*               -> generator.encoder.*
                   generator_predictions.*         -> generator_head.transform.*
                   generator_lm_head.bias          -> generator_head.bias   (its weight is the shared token matrix)

ELECTRA shares the embeddings between the towers, so the generator's copy is not loaded (a
warning says how far it is from the discriminator's if they differ). Any missing, unexpected
or differently shaped tensor is one error naming it. Only rank 0 reads the weights; under ZeRO-3
each module's partitioned parameters are gathered, rank 0 writes them and DeepSpeed scatters
the result (`deepspeed.zero.GatheredParameters(modifier_rank=0)`); without ZeRO-3,
`deepspeed.initialize` broadcasts rank 0's module. A resumed run loads its checkpoint afterwards,
which replaces all of it: the checkpoint wins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from typing import TYPE_CHECKING

import torch

from common import configs, storage
from pretraining.model import _gathered

if TYPE_CHECKING:  # pretraining.config calls pretrained_shapes: the config module imports this one
    from pretraining.config import InitConfig
    from pretraining.sizes import ModelConfig

log = logging.getLogger("pretraining.init_from")

DISCRIMINATOR, GENERATOR = "discriminator", "generator"
_BUFFERS = ("position_ids", "token_type_ids")  # transformers' non-trained buffers, rebuilt by every model


class InitError(configs.ConfigError):
    """init.pretrained cannot be used as given; the message names the setting or the tensor."""


@dataclasses.dataclass(frozen=True)
class PretrainedPair:
    discriminator: str  # directory, s3:// prefix or hub id of an ElectraForPreTraining
    generator: str  # the same for its ElectraForMaskedLM

    @classmethod
    def from_config(cls, init: InitConfig) -> "PretrainedPair":
        if init.generator:
            return cls(init.pretrained, init.generator)
        d, g = storage.join(init.pretrained, DISCRIMINATOR), storage.join(init.pretrained, GENERATOR)
        if not (_is_files(init.pretrained) and storage.exists(storage.join(d, "config.json"))
                and storage.exists(storage.join(g, "config.json"))):
            raise InitError(f"init.pretrained={init.pretrained} has no {DISCRIMINATOR}/ and {GENERATOR}/ model "
                            "directories: name the pair's parent (what pretraining.export writes), or the "
                            "discriminator with init.generator=<generator dir or hub id>")
        return cls(d, g)


def _is_files(uri: str) -> bool:
    """A local path or s3:// prefix (anything else is taken for a hub id)."""
    return storage.is_s3(uri) or os.path.exists(uri)


@contextlib.contextmanager
def _local(uri: str):
    """A local directory for a model: s3:// is downloaded, a local path or hub id passes through."""
    if storage.is_s3(uri):
        with storage.local_copy(uri) as d:
            yield d
    else:
        yield uri


def _config(uri: str):
    from transformers import ElectraConfig

    try:
        if storage.is_s3(uri):
            return ElectraConfig.from_dict(json.loads(storage.read_text(storage.join(uri, "config.json"))))
        return ElectraConfig.from_pretrained(uri)
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise InitError(f"cannot read the ELECTRA config of {uri}: {str(exc).splitlines()[0]}") from None


def shapes_from(disc, gen) -> dict[str, object]:
    """ModelConfig fields from the pair's `ElectraConfig`s; raises if the pair cannot be one model."""
    problems = []
    for name, c in ((DISCRIMINATOR, disc), (GENERATOR, gen)):
        if c.model_type != "electra":
            problems.append(f"the {name} is a {c.model_type!r} model, not ELECTRA")
        if c.hidden_act != "gelu":
            problems.append(f"the {name} uses hidden_act={c.hidden_act!r}; this model builds both towers with gelu")
    for field in ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size", "num_hidden_layers"):
        if getattr(disc, field) != getattr(gen, field):
            problems.append(f"{field}: discriminator {getattr(disc, field)} vs generator {getattr(gen, field)} "
                            "(both towers share one embeddings module and one depth here)")
    if problems:
        raise InitError("init.pretrained is not a pair this model can load: " + "; ".join(problems))
    return dict(vocab_size=disc.vocab_size, embedding_size=disc.embedding_size, hidden_size=disc.hidden_size,
                num_hidden_layers=disc.num_hidden_layers, num_attention_heads=disc.num_attention_heads,
                intermediate_size=disc.intermediate_size, generator_hidden_size=gen.hidden_size,
                generator_num_attention_heads=gen.num_attention_heads,
                generator_intermediate_size=gen.intermediate_size,
                max_position_embeddings=disc.max_position_embeddings, type_vocab_size=disc.type_vocab_size,
                hidden_dropout_prob=disc.hidden_dropout_prob,
                attention_probs_dropout_prob=disc.attention_probs_dropout_prob,
                layer_norm_eps=disc.layer_norm_eps, initializer_range=disc.initializer_range)


def pretrained_shapes(init: InitConfig, model: ModelConfig, explicit: set[str] = frozenset()) -> dict[str, object]:
    """The model fields read from init.pretrained's configs (the checkpoint decides the shapes), checked
    against the run's `model` (pretraining.config.with_inputs puts them in the run config).

    `model.vocab_size` is the pack's by now: it must be the checkpoint's, or the pack was made with
    another tokenizer. A shape set on the command line that disagrees is an error, not silently replaced.
    """
    pair = PretrainedPair.from_config(init)
    fields = shapes_from(_config(pair.discriminator), _config(pair.generator))
    if model.vocab_size != fields["vocab_size"]:
        raise InitError(f"init.pretrained has a vocabulary of {fields['vocab_size']} ids but the pack's tokenizer has "
                        f"{model.vocab_size}: pack the corpus with the checkpoint's own tokenizer "
                        f"(python -m pipelines.pack --tokenizer {pair.discriminator} ...)")
    clash = [f"model.{k}={getattr(model, k)} (the checkpoint has {v})" for k, v in fields.items()
             if f"model.{k}" in explicit and getattr(model, k) != v]
    if clash:
        raise InitError(f"{', '.join(clash)}: with init.pretrained the checkpoint decides the model's shapes; "
                        "drop the override")
    return fields


def from_hf_state_dicts(disc: dict[str, torch.Tensor], gen: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This model's state dict from an ElectraForPreTraining + ElectraForMaskedLM pair's (hf_state_dicts inverted)."""
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in disc.items():
        if key.endswith(_BUFFERS):
            continue
        if key.startswith("electra.embeddings."):
            out[key.removeprefix("electra.")] = value
        elif key.startswith("electra."):
            out["discriminator." + key.removeprefix("electra.")] = value
        elif key.startswith("discriminator_predictions."):
            out[key] = value
        else:
            unexpected.append(f"discriminator {key}")
    for key, value in gen.items():
        if key.endswith(_BUFFERS) or key.startswith("electra.embeddings.") or key == "generator_lm_head.weight":
            continue  # shared with the discriminator; the output matrix is the token matrix
        if key.startswith("electra."):
            out["generator." + key.removeprefix("electra.")] = value
        elif key.startswith("generator_predictions."):
            out["generator_head.transform." + key.removeprefix("generator_predictions.")] = value
        elif key == "generator_lm_head.bias":
            out["generator_head.bias"] = value
        else:
            unexpected.append(f"generator {key}")
    if unexpected:
        raise InitError(f"init.pretrained has tensors an ELECTRA pair does not: {', '.join(unexpected)}")
    return out


def check_shapes(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> None:
    """One error naming every tensor that is missing, extra or of another shape."""
    problems = [f"{k} is missing" for k in expected if k not in state]
    problems += [f"{k} is not in this model" for k in state if k not in expected]
    problems += [f"{k} has shape {list(state[k].shape)}, the model expects {list(expected[k])}"
                 for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
    if problems:
        raise InitError("init.pretrained does not fit the model: " + "; ".join(problems))


def _embeddings_gap(disc: dict[str, torch.Tensor], gen: dict[str, torch.Tensor]) -> float:
    """Largest difference between the generator's own embeddings and the discriminator's (0 in a published pair)."""
    gap = 0.0
    for key, value in gen.items():
        if key.startswith("electra.embeddings.") and not key.endswith(_BUFFERS) and key in disc:
            if value.shape != disc[key].shape:
                raise InitError(f"generator {key} has shape {list(value.shape)}, the discriminator's "
                                f"{list(disc[key].shape)}: the towers must share their embeddings")
            gap = max(gap, float((value.float() - disc[key].float()).abs().max()))
    return gap


def read_pair(pair: PretrainedPair) -> dict[str, torch.Tensor]:
    """The pair's weights as this model's state dict (fp32, CPU)."""
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    sds = []
    for cls, uri in ((ElectraForPreTraining, pair.discriminator), (ElectraForMaskedLM, pair.generator)):
        with _local(uri) as where:
            try:
                model, info = cls.from_pretrained(where, dtype=torch.float32, output_loading_info=True)
            except (OSError, ValueError) as exc:
                raise InitError(f"cannot load {cls.__name__} from {uri}: {str(exc).splitlines()[0]}") from None
        missing = [k for k in info.get("missing_keys", []) if not k.endswith(_BUFFERS)]
        if missing or info.get("mismatched_keys"):
            raise InitError(f"{uri} is not a complete {cls.__name__}: missing {missing}, "
                            f"mismatched {info.get('mismatched_keys')}")
        sds.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        del model
    gap = _embeddings_gap(*sds)
    if gap > 0:
        log.warning("the generator's own embeddings differ from the discriminator's (max |diff| %.3g); ELECTRA "
                    "shares them and this model uses the discriminator's", gap)
    return from_hf_state_dicts(*sds)


def load_into(model: torch.nn.Module, init: InitConfig, *, rank: int = 0, dist=None) -> dict:
    """Copy init.pretrained into `model` (built, possibly under zero.Init) before deepspeed.initialize.

    Collective when `dist` is given: every rank calls it. Rank 0 reads and checks the weights and
    tells the others whether to proceed, so a bad checkpoint stops every rank with the same error.
    """
    expected = {n: tuple(getattr(p, "ds_shape", p.shape)) for n, p in model.named_parameters()}
    state, error = None, None
    if rank == 0:
        try:
            state = read_pair(PretrainedPair.from_config(init))
            check_shapes(state, expected)
        except InitError as exc:
            error = str(exc)
    if dist is not None and dist.is_initialized() and dist.get_world_size() > 1:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error:
        raise InitError(error)
    with torch.no_grad():
        for prefix, module in model.named_modules():
            own = list(module.named_parameters(recurse=False))
            if not own:
                continue
            with _gathered([p for _, p in own], modifier_rank=0):
                if rank == 0:
                    for name, p in own:
                        p.data.copy_(state[f"{prefix}.{name}" if prefix else name])
    if rank == 0:
        log.info("initialised from %s (%d tensors, %d parameters)", init.pretrained, len(state),
                 sum(v.numel() for v in state.values()))
    return {"pretrained": init.pretrained, "generator": init.generator, "tensors": len(expected)}
