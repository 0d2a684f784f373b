"""How long a preempted rank needs: one ZeRO-3 checkpoint, saved and uploaded, at two model sizes, on CPU.

    python benchmarks/checkpoint_save.py                      # base and large, 2 CPU ranks, ds_configs/zero3.json
    python benchmarks/checkpoint_save.py --sizes large --json out.json

The number it serves is the SIGTERM-to-SIGKILL grace of a cluster job (`cluster.checkpoint_grace_s`,
pretraining/launch.py): on a preemption or time limit the ranks finish their step, then save a
checkpoint and upload it before the scheduler kills them.

For each size the real trainer runs under the node launcher (pretraining/launch.py) with 2 ranks on
this machine, the production config ds_configs/zero3.json (bf16 weights, fp32 master weights and Adam
moments, ZeRO-3 partitions), vocabulary 32768, a synthetic pack on a SeaweedFS S3 gateway started for
the run, and `checkpoint.every_steps=1` for 3 steps. A save is timed from rank 0's progress line of its
step to rank 0's "checkpoint ... complete" line: DeepSpeed's save to local staging, every rank's sha256
and upload of its files, the manifest, pruning. Steps 1 and 2 count (step 3's also runs the export probe).

Peer, in the same run: the I/O floor for the same bytes. One file per rank of that rank's share of the
checkpoint, written from memory to the same staging disk (no fsync, as torch.save), hashed and uploaded
to the same store by two processes at once. save / floor says how much of a save is DeepSpeed's own work (gathering, pickling)
on top of moving the bytes; bytes / save is the rate to scale the grace by on other hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from loader_throughput import pack_rows, write_pack  # noqa: E402

from common import machine, storage  # noqa: E402
from common.ports import free_port  # noqa: E402
from common.seaweedfs import LocalS3  # noqa: E402
from pretraining import checkpoint as ckpt  # noqa: E402
from pretraining.launch import LAUNCH_SCRIPT, TRAIN_SCRIPT  # noqa: E402

_TS = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
STEP_LINE = re.compile(_TS + r" INFO pretraining\.train: step (\d+)/")
DONE_LINE = re.compile(_TS + r" INFO pretraining\.train: checkpoint \S+/step-(\d+) complete")


def _t(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def save_seconds(log: str) -> dict[int, float]:
    """{step: seconds from its progress line to its checkpoint's completion}, from rank 0's log."""
    started = {int(m.group(2)): _t(m.group(1)) for m in STEP_LINE.finditer(log)}
    return {int(m.group(2)): _t(m.group(1)) - started[int(m.group(2))] for m in DONE_LINE.finditer(log)
            if int(m.group(2)) in started}


def run_trainer(size: str, pack: str, run: str, staging: str, ranks: int, env: dict, log_path: Path) -> str:
    cmd = [sys.executable, LAUNCH_SCRIPT, "--nnodes", "1", "--node-rank", "0", "--nproc-per-node", str(ranks),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           TRAIN_SCRIPT, "--deepspeed", str(REPO / "ds_configs" / "zero3.json"), "--config", size,
           f"data.pack={pack}", f"run={run}", "max_steps=3", f"data.train_batch={ranks}", "data.micro_batch=1",
           "checkpoint.every_steps=1", "checkpoint.keep_last=1", "checkpoint.verify=size", "logging.every_steps=1",
           f"checkpoint.staging={staging}", "data.workers=1", "data.prefetch_steps=1"]
    with open(log_path, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    log = log_path.read_text()
    if rc != 0:
        raise RuntimeError(f"{size}: the trainer exited {rc}:\n{log[-4000:]}")
    return log


def _write_hash_upload(args: tuple[str, int, str, dict]) -> float:
    path, nbytes, dest, env = args
    settings = storage.StorageSettings(endpoint_url=env["AWS_ENDPOINT_URL"], access_key_id=env["AWS_ACCESS_KEY_ID"],
                                       secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    block = os.urandom(1 << 20)
    t0 = time.monotonic()
    with open(path, "wb") as f:
        for _ in range(nbytes >> 20):
            f.write(block)
        f.write(block[: nbytes & ((1 << 20) - 1)])  # no fsync: torch.save does not sync either
    storage.sha256_uri(path)
    storage.upload_file(path, dest, settings)
    os.unlink(path)
    return time.monotonic() - t0


def floor_seconds(per_rank: list[int], staging: str, bucket: str, env: dict) -> float:
    jobs = [(os.path.join(staging, f"floor-{r}.bin"), n, f"{bucket}/floor/{r}.bin", env) for r, n in enumerate(per_rank)]
    t0 = time.monotonic()
    with ProcessPoolExecutor(len(jobs)) as pool:
        list(pool.map(_write_hash_upload, jobs))
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--sizes", default="base,large", help="comma list of named sizes")
    ap.add_argument("--ranks", type=int, default=2, help="CPU ranks (one node)")
    ap.add_argument("--seq-len", type=int, default=128, help="pack sequence length (the step's cost only)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    a = ap.parse_args(argv)
    info = machine.describe()
    print(f"machine: {json.dumps(info)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-", dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        s3 = LocalS3(os.path.join(tmp, "s3")).start()
        try:
            env = {**os.environ, **s3.settings.to_env(), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
            bucket = f"s3://ckpt-bench-{uuid.uuid4().hex[:8]}"
            storage.make_bucket(bucket, s3.settings)
            pack = f"{bucket}/pack"
            write_pack(pack, pack_rows(1024, a.seq_len, 32768), 2, 32768, s3.settings)
            for size in a.sizes.split(","):
                run, staging = f"{bucket}/runs/{size}", os.path.join(tmp, f"staging-{size}")
                t0 = time.monotonic()
                log = run_trainer(size, pack, run, staging, a.ranks, env, Path(tmp) / f"{size}.log")
                wall = time.monotonic() - t0
                saves = save_seconds(log)
                os.environ.update(s3.settings.to_env())
                _, m = ckpt.latest_complete(run, mode="size")
                nbytes = sum(f["bytes"] for f in m["shards"])
                per_rank = [0] * a.ranks  # files every rank reads are rank 0's to write
                for f in m["shards"]:
                    per_rank[ckpt.owner_rank(f["path"]) or 0] += f["bytes"]
                os.makedirs(staging, exist_ok=True)
                floor = floor_seconds(per_rank, staging, bucket, env)
                timed = [saves[s] for s in (1, 2) if s in saves]
                params = json.loads(storage.read_text(f"{run}/run_info.json", s3.settings))["params"]
                results[size] = {"params": params, "checkpoint_bytes": nbytes, "save_s": timed,
                                 "save_median_s": statistics.median(timed), "floor_s": floor,
                                 "save_over_floor": statistics.median(timed) / floor,
                                 "save_mb_per_s": nbytes / 1e6 / statistics.median(timed), "trainer_wall_s": wall}
                r = results[size]
                print(f"{size}: {params / 1e6:.0f}M params, checkpoint {nbytes / 1e9:.2f} GB; save+upload "
                      f"{', '.join(f'{s:.1f}' for s in timed)} s (median {r['save_median_s']:.1f} s, "
                      f"{r['save_mb_per_s']:.0f} MB/s); I/O floor {floor:.1f} s; save/floor {r['save_over_floor']:.2f}")
        finally:
            s3.stop()
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": info, "args": vars(a), "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
