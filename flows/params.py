"""Typed parameters of the `electra-pretraining` flow (pydantic: Prefect validates them and shows them as a form).

Each group is one concern: where the corpus is, how Beam runs, how the tokenizer and
pack are built, how DeepSpeed is launched, what is evaluated, how the model is
published. `RunSpec` bundles them and derives every output URI from the storage root,
so a run's layout is decided in one place:

    <storage_root>/<run_name>/clean/          documents/, rejects/, stats.json, manifest.json
    <storage_root>/<run_name>/tokenizer/      spm.model + HF files
    <storage_root>/<run_name>/pack/           shards/*.bin
    <storage_root>/<run_name>/pretrain/       checkpoints/step-N/, tensorboard/
    <storage_root>/<run_name>/model/step-N/   discriminator/, generator/
    <storage_root>/<run_name>/reports/<model>/<timestamp>/
    <storage_root>/<run_name>/_flow/<stage>.json   the flow's skip records (see flows/caching.py)
    <storage_root>/models/<name>/<version>/   the published model
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common import storage

Size = Literal["tiny", "small", "base", "large"]
LauncherMode = Literal["single_node", "hostfile", "no_ssh", "cluster"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class _Strict(BaseModel):
    # Unknown keys are refused, as in the typed stage configs: a typo must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class CorpusParams(_Strict):
    inputs: list[str] = Field(..., min_length=1,
                              description="raw input globs (WARC/WET/JSONL/Parquet/text), local or s3://")
    format: str | None = Field(None, description="force a reader (warc, wet, jsonl, parquet, text); None = detect")
    extra_args: list[str] = Field(default_factory=list,
                                  description="more pipelines.clean flags, e.g. ['--config', 'clean.yaml']")


class BeamParams(_Strict):
    runner: str = Field("DirectRunner",
                        description="Beam runner: DirectRunner, DaskRunner, FlinkRunner, SparkRunner, DataflowRunner")
    options: list[str] = Field(default_factory=list,
                               description="more Beam flags, e.g. ['--flink_master=host:8081']")

    def args(self) -> list[str]:
        return [f"--runner={self.runner}", *self.options]


class TokenizerParams(_Strict):
    vocab_size: int = Field(32768, ge=264, description="SentencePiece vocabulary (multiple of 128: tensor cores)")
    model_type: Literal["unigram", "bpe"] = "unigram"
    sample_docs: int | None = Field(None, ge=1, description="documents sampled for training; None = the stage default")


class PackParams(_Strict):
    max_seq_length: int = Field(128, ge=16, le=4096, description="128 for small, 512 for base/large (paper)")
    extra_args: list[str] = Field(default_factory=list, description="more pipelines.pack flags (e.g. --seed)")


class ClusterParams(_Strict):
    kind: Literal["kubernetes", "slurm"] = "kubernetes"
    template: str = Field("infra/k8s/deepspeed-job.yaml", description="template rendered with the run's values")
    image: str = Field("electra-forge-train:latest", description="training image (infra/docker/Dockerfile)")
    namespace: str = "default"
    poll_seconds: int = Field(60, ge=1, description="how often the flow checks the job and its checkpoints")


class LauncherParams(_Strict):
    mode: LauncherMode = Field("single_node", description=(
        "single_node: one launcher here; hostfile: DeepSpeed's pdsh/ssh launcher over a hostfile; "
        "no_ssh: this node's launcher with --no_ssh --node_rank (the others run the same command); "
        "cluster: submit infra/k8s or infra/slurm and wait for its checkpoints"))
    num_gpus: int | None = Field(None, ge=1, description="GPUs per node; None = all visible")
    num_procs: int | None = Field(None, ge=1, description="CPU-only ranks on this node (gloo); None = 1")
    num_nodes: int = Field(1, ge=1)
    hostfile: str | None = Field(None, description="hostfile ('host slots=8' lines) for mode=hostfile and mode=no_ssh")
    node_rank: int = Field(0, ge=0, description="this node's rank for mode=no_ssh")
    master_addr: str | None = None
    master_port: int = Field(29500, ge=1, le=65535)
    cluster: ClusterParams = Field(default_factory=ClusterParams)

    @model_validator(mode="after")
    def _check(self) -> "LauncherParams":
        if self.mode == "hostfile" and not self.hostfile:
            raise ValueError("launcher.mode=hostfile needs launcher.hostfile")
        if self.mode == "no_ssh" and (self.num_nodes < 2 or not self.master_addr or not self.hostfile):
            raise ValueError("launcher.mode=no_ssh needs num_nodes >= 2, master_addr and hostfile "
                             "(the same hostfile on every node: DeepSpeed reads the world size from it)")
        if self.node_rank >= self.num_nodes:
            raise ValueError(f"node_rank {self.node_rank} must be < num_nodes {self.num_nodes}")
        return self


class TrainParams(_Strict):
    deepspeed_config: str = Field("ds_configs/zero3.json", description="DeepSpeed JSON (repo path or absolute)")
    max_steps: int | None = Field(None, ge=1, description="None = the size's default (paper)")
    overrides: list[str] = Field(default_factory=list, description="pretraining config `key.sub=value` overrides")
    launcher: LauncherParams = Field(default_factory=LauncherParams)

    @field_validator("overrides")
    @classmethod
    def _key_value(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if "=" not in o]
        if bad:
            raise ValueError(f"overrides must be key=value, got {bad}")
        reserved = [o for o in v if o.split("=", 1)[0].strip() in ("run", "data.pack", "max_steps")]
        if reserved:
            raise ValueError(f"{reserved}: run, data.pack and max_steps are set by the flow (use train.max_steps)")
        return v


class EvalParams(_Strict):
    enabled: bool = True
    tier: Literal["quick", "full"] = Field("full", description=(
        "full: GLUE + SQuAD with the paper's recipe, 3 seeds (final reports); quick: MNLI, SST-2, SQuAD 2.0, "
        "1 seed, <= 1000 steps each (scheduled checks during pretraining); see evaluation/tiers.py"))
    tasks: list[str] | None = Field(None, description="task names or groups; None = the tier's tasks")
    seeds: int | None = Field(None, ge=1, description="fine-tuning seeds per task (median reported); None = the tier's")
    data_dir: str | None = Field(None, description="local/s3:// GLUE and SQuAD mirror in official formats; None = Hub")
    overrides: list[str] = Field(default_factory=list,
                                 description="evaluation `key=value` overrides (finetune.max_steps=...)")


class PublishParams(_Strict):
    enabled: bool = True
    name: str | None = Field(None, description="models/<name>/...; None = electra-<size>-<run_name>")
    version: str | None = Field(None, description="models/<name>/<version>/; None = the checkpoint's step-<N>")
    hub_repo: str | None = Field(None, description="push to this Hugging Face Hub repo when HF_TOKEN is set")
    license: str = "apache-2.0"
    language: list[str] = Field(default_factory=lambda: ["en"])


class RunSpec(_Strict):
    """Everything one `electra-pretraining` run needs; the flow's parameters, validated together."""

    size: Size = "small"
    run_name: str = Field("electra", description="names the run directory under storage_root")
    storage_root: str = Field(..., description="s3://bucket/prefix or a local path; every output goes below it")
    corpus: CorpusParams | None = Field(None, description="raw inputs; needed by the clean stage only")
    beam: BeamParams = Field(default_factory=BeamParams)
    tokenizer: TokenizerParams = Field(default_factory=TokenizerParams)
    pack: PackParams = Field(default_factory=PackParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluation: EvalParams = Field(default_factory=EvalParams)
    publish: PublishParams = Field(default_factory=PublishParams)

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"run_name {v!r}: lowercase letters, digits, '.', '_' or '-' (max 63)")
        return v

    @field_validator("storage_root")
    @classmethod
    def _root(cls, v: str) -> str:
        if "{{" in v:
            raise ValueError(f"storage_root {v!r} is an unresolved prefect.yaml placeholder: export the variable "
                             "before `prefect deploy`, or pass `--param storage_root=s3://...` to the run")
        if storage.is_s3(v):
            storage.split_s3(v)  # raises on a bucket-less URI
            return v.rstrip("/")
        return storage.normalize(v)

    # --------------------------------------------------------------- layout
    @property
    def run_root(self) -> str:
        return storage.join(self.storage_root, self.run_name)

    @property
    def clean_uri(self) -> str:
        return storage.join(self.run_root, "clean")

    @property
    def tokenizer_uri(self) -> str:
        return storage.join(self.run_root, "tokenizer")

    @property
    def pack_uri(self) -> str:
        return storage.join(self.run_root, "pack")

    @property
    def pretrain_uri(self) -> str:
        return storage.join(self.run_root, "pretrain")

    def model_uri(self, checkpoint_tag: str) -> str:
        return storage.join(self.run_root, "model", checkpoint_tag)

    @property
    def state_uri(self) -> str:
        return storage.join(self.run_root, "_flow")

    @property
    def model_name(self) -> str:
        return self.publish.name or f"electra-{self.size}-{self.run_name}"

    def published_uri(self, version: str) -> str:
        return storage.join(self.storage_root, "models", self.model_name, self.publish.version or version)
