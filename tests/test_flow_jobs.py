"""How the flow calls the jobs (flows/stages.py): the typed config it hands each job is the one the job's own
CLI builds from the command the flow logs, and a job's errors keep their exit codes."""

from __future__ import annotations

import pytest

from common.cli import EXIT_FIX, EXIT_RETRY
from common.storage import StorageUnavailable
from flows import stages
from flows.params import RunSpec
from flows.results import StageError


@pytest.fixture
def spec(tmp_path) -> RunSpec:
    return RunSpec.model_validate({
        "size": "tiny", "run_name": "r", "storage_root": str(tmp_path / "store"),
        "corpus": {"inputs": [str(tmp_path / "raw/*.txt")], "format": "text",
                   "extra_args": ["--set", "dedup.bands=20", "--break-claim"]},
        "tokenizer": {"vocab_size": 1024, "model_type": "bpe"},
        "pack": {"max_seq_length": 64, "extra_args": ["--seed", "3"]},
        "evaluation": {"tier": "quick", "tasks": ["sst2"], "seeds": 2, "overrides": ["finetune.max_steps=5"]}})


def test_each_job_config_is_what_its_cli_builds_from_the_logged_command(spec):
    from evaluation import run as evaluation
    from pipelines import clean, pack, train_tokenizer

    job = stages.clean_job(spec)
    assert job.config == clean.parse(list(job.argv))[0]
    assert job.config.dedup.bands == 20 and job.config.format == "text" and job.config.output == spec.clean_uri
    job = stages.tokenizer_job(spec, "/d")
    assert job.config == train_tokenizer.parse(list(job.argv))
    assert (job.config.vocab_size, job.config.model_type) == (1024, "bpe")
    job = stages.pack_job(spec, "/d", "/t")
    assert job.config == pack.parse(list(job.argv))[0] and job.config.seed == 3 and job.config.max_seq_length == 64
    job = stages.eval_job(spec, "/m")
    assert job.config == evaluation.parse(list(job.argv))
    assert job.config.tasks == ("sst2",) and job.config.finetune.max_steps == 5
    assert stages.export_job("/c", "/o").command == "python -m pretraining.export --checkpoint /c --output /o"


def test_a_refused_extra_flag_is_a_stage_error(spec):
    bad = spec.model_copy(update={"pack": spec.pack.model_copy(update={"extra_args": ["--seed", "three"]})})
    with pytest.raises(StageError) as err:
        stages.pack_job(bad, "/d", "/t")
    assert err.value.returncode == EXIT_FIX


@pytest.mark.parametrize("exc,code", [(StorageUnavailable("endpoint down"), EXIT_RETRY), (ValueError("bad"), EXIT_FIX)])
def test_job_errors_keep_their_exit_codes(exc, code):
    def fail():
        raise exc

    job = stages.Job("pipelines.train_tokenizer", None, ("--input", "x"), fail, (ValueError,))
    with pytest.raises(StageError, match="python -m pipelines.train_tokenizer --input x exited with") as err:
        stages.run(job)
    assert err.value.returncode == code


def test_a_bug_keeps_its_traceback():
    def fail():
        raise KeyError("bug")

    with pytest.raises(KeyError):
        stages.run(stages.Job("evaluation.run", None, (), fail))
