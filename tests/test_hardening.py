"""Fast checks of the hardening pieces: credentials never serialised, errors classified by what to do about them,
Beam worker failures mapped back, /dev/shm and staging hygiene, metrics after a resume, the container user."""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from common import cli, storage
from pipelines import beam as beam_opts
from pretraining import local_comm, metrics, staging

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-value-that-must-not-leak"


def test_settings_never_print_or_pickle_credentials():
    s = storage.StorageSettings(endpoint_url="http://127.0.0.1:1", access_key_id="AKID", secret_access_key=SECRET,
                                session_token="TOKEN")
    assert SECRET not in repr(s) and "TOKEN" not in repr(s)
    blob = pickle.dumps(s)
    assert SECRET.encode() not in blob and b"AKID" not in blob and b"TOKEN" not in blob
    back = pickle.loads(blob)
    assert back.endpoint_url == s.endpoint_url and back.secret_access_key is None  # the worker's env decides
    assert not any(SECRET in a for a in storage.beam_s3_args(s))
    assert s.to_env()["AWS_SECRET_ACCESS_KEY"] == SECRET  # a child process's environment is where it goes


def test_credential_flags_leave_the_beam_options():
    args = ["--runner=DirectRunner", f"--s3_secret_access_key={SECRET}", "--s3_access_key_id", "AKID",
            "--s3_endpoint_url=http://127.0.0.1:1"]
    rest, creds = beam_opts.split_credentials(args)
    assert rest == ["--runner=DirectRunner", "--s3_endpoint_url=http://127.0.0.1:1"]
    assert creds == {"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": "AKID"}
    job = beam_opts.job(args, name="t")
    assert SECRET not in json.dumps(job.options.get_all_options(), default=str)
    assert job.settings.secret_access_key == SECRET and job.settings.endpoint_url == "http://127.0.0.1:1"


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize("exc,kind,code,says", [
    (EndpointConnectionError(endpoint_url="http://x"), storage.StorageUnavailable, 75, "cannot reach"),
    (_client_error("SlowDown", 503), storage.StorageUnavailable, 75, "keeps failing"),
    (_client_error("InvalidAccessKeyId", 403), storage.CredentialsError, 2, "refused the credentials"),
    (_client_error("403", 403), storage.CredentialsError, 2, "AWS_SECRET_ACCESS_KEY"),
    (NoCredentialsError(), storage.CredentialsError, 2, "no S3 credentials"),
    (_client_error("NoSuchBucket", 404), storage.BucketMissingError, 2, "create it"),
    (_client_error("PreconditionFailed", 412), storage.PreconditionFailed, 2, "conditional write"),
])
def test_storage_errors_say_what_to_fix_and_map_to_exit_codes(exc, kind, code, says):
    err = storage._translate(exc, "s3://bucket/key")
    assert type(err) is kind and says in str(err) and "\n" not in str(err)
    assert cli.exit_code(err) == code


def test_a_worker_failure_becomes_the_error_it_was():
    text = ("Pipeline clean failed in state FAILED: Traceback (most recent call last):\n  File ...\n"
            "common.storage.StorageUnavailable: cannot reach the S3 endpoint http://x for s3://b/k (...): retry "
            "[while running 'Read/Files']\n")
    err = beam_opts.worker_error(RuntimeError(text), "clean", "/tmp/x.log")
    assert type(err) is storage.StorageUnavailable and cli.exit_code(err) == 75
    assert str(err).startswith("cannot reach the S3 endpoint") and "while running" not in str(err)
    assert str(err).endswith("(Beam worker log: /tmp/x.log)")
    other = beam_opts.worker_error(RuntimeError("boom\nZeroDivisionError: division by zero"), "clean", "/tmp/x.log")
    assert type(other) is beam_opts.JobFailed and cli.exit_code(other) == 1 and "division by zero" in str(other)


def test_run_job_prints_one_line_and_the_traceback_only_with_debug(capsys):
    def body():
        raise storage.StorageUnavailable("cannot reach the S3 endpoint: retry")

    assert cli.run_job(body, argv=[]) == 75
    err = capsys.readouterr().err
    assert err == "error: cannot reach the S3 endpoint: retry\n"
    assert cli.run_job(body, argv=["--debug"]) == 75
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("module, argv, says", [
    ("pipelines.inspect", ["{nope}"], ("no manifest at {nope}", "Run it first")),
    ("flows.lineage", ["{nope}"], ("no manifest at {nope}", "check the URI")),
    ("pretraining.export", ["--checkpoint", "{nope}", "--output", "{tmp}/out"], ("no complete checkpoint", "{nope}")),
    ("evaluation.run", ["--model", "{nope}", "--output", "{tmp}/out", "--tasks", "sst2", "--data-dir", "{tmp}"],
     ("model {nope}", "discriminator/")),
])
def test_the_other_clis_fail_in_one_line_with_exit_2(module, argv, says, tmp_path, capsys):
    """Export, evaluation, inspect and lineage on a path that holds nothing: exit 2, one line naming it."""
    import importlib

    fill = {"nope": str(tmp_path / "nope"), "tmp": str(tmp_path)}
    assert importlib.import_module(module).main([a.format(**fill) for a in argv]) == cli.EXIT_FIX
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert all(s.format(**fill) in errors[0] for s in says), errors[0]


def test_shm_buffer_of_this_rank_is_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(local_comm, "SHM_DIR", tmp_path)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29555")
    name = local_comm.shm_buffer_name(1)
    assert re.fullmatch(rf"deepspeed_allreduce_buffer_{os.getuid()}_127\.0\.0\.1_29555_1", name)
    (tmp_path / name).write_bytes(b"x")
    (tmp_path / local_comm.shm_buffer_name(0)).write_bytes(b"x")  # another rank's: not ours to remove
    assert local_comm.remove_shm_buffer(1) and not local_comm.remove_shm_buffer(1)
    assert [p.name for p in tmp_path.iterdir()] == [local_comm.shm_buffer_name(0)]


def test_deepspeed_shm_op_is_not_loaded_on_cpu(monkeypatch):
    import importlib

    ds_torch = importlib.import_module("deepspeed.comm.torch")
    # disable_shm_allreduce replaces this module attribute: monkeypatch puts DeepSpeed's own back after the test
    monkeypatch.setattr(ds_torch, "build_shm_op", ds_torch.build_shm_op)
    assert local_comm.disable_shm_allreduce() and ds_torch.build_shm_op() is None


def test_loopback_rendezvous_only_when_every_rank_is_local(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_SIZE", "2")
    assert local_comm.all_ranks_local()
    monkeypatch.setenv("LOCAL_SIZE", "1")  # two nodes
    assert not local_comm.all_ranks_local()
    assert local_comm._loopback("127.0.0.1") and local_comm._loopback("localhost")
    assert not local_comm._loopback("10.0.0.5") and not local_comm._loopback("node-0")


class _OneRank:
    def get_rank(self):
        return 0

    def broadcast_object_list(self, objs, src):
        pass

    def barrier(self):
        pass


def test_staging_dir_is_private_unpredictable_and_removed(monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    a, b = staging.private_dir(_OneRank()), staging.private_dir(_OneRank())
    assert a != b and Path(a).parent == tmp_path and Path(a).name.startswith(staging.PREFIX)
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o700
    staging.remove(a, _OneRank(), local_rank=0)
    assert not os.path.exists(a)
    os.chmod(b, 0o777)  # someone else could write there: refuse it
    name = Path(b).name
    monkeypatch.setattr(staging.secrets, "token_hex", lambda n: name.rsplit("-", 1)[1])
    with pytest.raises(staging.StagingError, match="not a private directory"):
        staging.private_dir(_OneRank())


def test_metrics_after_a_resume_hold_each_step_once(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 10.0 - s}) + "\n" for s in range(1, 11)) + '{"step": 1')
    log = metrics.MetricsLogger(str(tmp_path), max_steps=20, start_step=6, every_steps=100, tensorboard=False,
                                flops_per_token=None, peak_flops=None)
    from pretraining.model import METRIC_KEYS

    counts = {k: 1.0 for k in METRIC_KEYS}
    log.step(7, loss=1.0, mlm_loss=1.0, rtd_loss=1.0, counts=counts, lr=0.1, grad_norm=1.0, positions=1,
             tokens_seen=1)
    log.close()
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7]
    assert metrics.read_losses(str(path))[7]["loss"] == 1.0


def test_training_image_runs_as_a_non_root_user():
    text = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]  # the runtime stage
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users, "the runtime stage sets no USER: it would run as root"
    uid = re.search(r"ARG APP_UID=(\d+)", final).group(1)
    assert users[-1] == "${APP_UID}:${APP_UID}" and int(uid) != 0
    assert re.search(r"useradd --uid \$\{APP_UID\}", final)


def test_the_flow_retries_an_outage_not_a_user_error():
    from flows.electra_pretraining import _transient
    from flows.results import StageError

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    assert _transient(None, None, State(StageError("python -m pipelines.clean ... returned 75", 75)))
    assert not _transient(None, None, State(StageError("python -m pipelines.clean ... returned 2", 2)))


def test_in_process_copies_keep_the_credentials():
    import copy

    s = storage.StorageSettings(access_key_id="AKID", secret_access_key=SECRET)
    assert copy.deepcopy(s).secret_access_key == SECRET and copy.copy(s).secret_access_key == SECRET
