"""What a flow stage hands to the next one, and how it fails.

A `StageResult` is all a downstream stage, the summary and the artifacts read of a finished
stage: where its output is, its manifest hash (the next stage's cache key is built from it),
and whether it ran or was reused. The output's own fields stay in its manifest.
"""

from __future__ import annotations

import dataclasses


class StageError(RuntimeError):
    """A stage exited with an error; the message says which and how to rerun it by hand."""

    def __init__(self, message: str, returncode: int | None = None):
        super().__init__(message)
        self.returncode = returncode  # the job's exit code (common/cli.py): 75 is retried, 2 is not


@dataclasses.dataclass(frozen=True)
class StageResult:
    stage: str  # the flow stage that produced it: clean, tokenizer, pack, pretrain, export, evaluate, publish
    output: str  # the output URI (its manifest.json is there)
    manifest_hash: str  # of that manifest: what downstream cache keys and lineage name
    kind: str | None  # the manifest kind (documents, tokenizer, pack, checkpoint, model, report)
    skipped: bool  # reused from the flow's cache (or found by the report flow), not run now
    seconds: float  # wall time of this stage in this flow run (lookup included)
    key: str  # the cache key it was recorded under; "" for an output the report flow found
    counters: dict = dataclasses.field(default_factory=dict)  # the manifest's counters, for the artifacts

    @classmethod
    def of(cls, stage: str, output: str, m: dict, *, skipped: bool, seconds: float, key: str) -> "StageResult":
        return cls(stage=stage, output=output, manifest_hash=m["manifest_hash"], kind=m.get("kind"),
                   skipped=skipped, seconds=seconds, key=key, counters=m.get("counters", {}))

    @classmethod
    def found(cls, stage: str, output: str, m: dict) -> "StageResult":
        """An output that exists already (the report flow's checkpoint, model or report): reused, not run."""
        return cls.of(stage, output, m, skipped=True, seconds=0.0, key="")

    def summary(self) -> dict:
        """The entry of `_flow/summary.json`."""
        return {"output": self.output, "manifest_hash": self.manifest_hash, "skipped": self.skipped,
                "seconds": round(self.seconds, 1)}
