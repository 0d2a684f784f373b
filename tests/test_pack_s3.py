"""The whole data chain through S3: raw JSONL -> clean -> tokenizer -> pack -> PackReader range reads."""

from __future__ import annotations

import numpy as np
import pytest
from clean_inputs import raw_prose

from common import manifest, packformat, storage
from pipelines import clean, documents, pack, train_tokenizer
from pipelines.packing import prose
from pipelines.tokenizer import load_hf, load_spm

pytestmark = pytest.mark.integration


def test_raw_to_pack_through_s3(s3_bucket):
    raw = raw_prose(s3_bucket, limit_chars=600_000)
    beam_args = ["--direct_num_workers=2"]

    assert clean.main(["--input", f"{s3_bucket}/raw/*.jsonl.gz", "--output", f"{s3_bucket}/clean", *beam_args]) == 0
    kept = list(documents.iter_documents(f"{s3_bucket}/clean"))
    assert len(kept) > len(raw) // 2, "the clean job should keep most of this prose"

    assert train_tokenizer.main(["--input", f"{s3_bucket}/clean", "--output", f"{s3_bucket}/tok",
                                 "--vocab-size", "2000"]) == 0
    assert pack.main(["--input", f"{s3_bucket}/clean", "--tokenizer", f"{s3_bucket}/tok",
                      "--output", f"{s3_bucket}/pack", "--max-seq-length", "128", "--seed", "3", *beam_args]) == 0

    m = manifest.read(f"{s3_bucket}/pack", kind="pack")
    tok_m = manifest.read(f"{s3_bucket}/tok", kind="tokenizer")
    assert m["tokenizer"]["manifest_hash"] == tok_m["manifest_hash"]
    assert m["inputs"][0]["manifest_hash"] == manifest.read(f"{s3_bucket}/clean")["manifest_hash"]
    assert m["counters"]["tokens_truncated"] == 0

    reader = packformat.PackReader(f"{s3_bucket}/pack")
    shard = max(range(len(reader.shards)), key=lambda i: reader.shards[i].examples)
    n = reader.shards[shard].examples
    whole = np.frombuffer(storage.read_bytes(reader.shards[shard].uri), "<u2").reshape(n, 128)
    window = reader.read(shard, n // 2, 5)  # one ranged GET from the middle of the shard
    assert window.shape == (5, 128) and (window == whole[n // 2:n // 2 + 5]).all()
    assert (packformat.attention_mask(window, 0) == (window != 0)).all()
    assert (window[:, 0] == 2).all()

    # Every kept token is in the pack, and the HF export (read from S3) agrees with spm.model.
    sp = load_spm(f"{s3_bucket}/tok").processor()
    total = sum(len(sp.encode(d["text"])) for d in kept)
    assert m["counters"]["tokens_packed"] == total
    hf = load_hf(f"{s3_bucket}/tok")
    sample = [d["text"][:2000] for d in kept[:50]]
    assert hf(sample, add_special_tokens=False)["input_ids"] == sp.encode(sample)


def test_beam_s3_options_alone_reach_the_store(s3_server, s3_bucket, monkeypatch, tmp_path):
    """No AWS_* variables: the clean and pack jobs find the store through Beam's S3Options flags alone, for
    Beam's own I/O, the project's reads and writes in the workers, and the manifests written last."""
    raw = raw_prose(s3_bucket, limit_chars=200_000)
    # The tokenizer job is no Beam job (it reads AWS_*): train it while the variables are still set.
    prose.write_documents(str(tmp_path / "docs"), [{"id": r["id"], "text": r["text"]} for r in raw], num_shards=1)
    assert train_tokenizer.main(["--input", str(tmp_path / "docs"), "--output", f"{s3_bucket}/tok",
                                 "--vocab-size", "1000"]) == 0
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    settings = s3_server.settings
    # Credentials as flags still work: they reach the workers through their environment, never the options.
    beam_args = ["--direct_num_workers=2", *storage.beam_s3_args(settings),
                 f"--s3_access_key_id={settings.access_key_id}", f"--s3_secret_access_key={settings.secret_access_key}"]
    assert clean.main(["--input", f"{s3_bucket}/raw/*.jsonl.gz", "--output", f"{s3_bucket}/clean", *beam_args]) == 0
    assert pack.main(["--input", f"{s3_bucket}/clean", "--tokenizer", f"{s3_bucket}/tok",
                      "--output", f"{s3_bucket}/pack", "--max-seq-length", "128", *beam_args]) == 0
    m = manifest.read(f"{s3_bucket}/pack", kind="pack", settings=settings)
    assert m["counters"]["examples"] > 0
    assert manifest.read(f"{s3_bucket}/clean", kind="documents", settings=settings)["counters"]
    with pytest.raises(storage.StorageError, match="no S3 credentials"):
        storage.read_bytes(f"{s3_bucket}/pack/manifest.json")  # and nothing above fell back on the environment



_KILLED_PACK = """
import sys, time
from common import storage
W = storage._MultipartWriter
init, upload = W.__init__, W._upload

def small_parts_for_shards(self, s3, bucket, key, uri, part_bytes, *rest):
    init(self, s3, bucket, key, uri, part_bytes, *rest)
    if "/shards/part-" in key:  # a final shard goes up in small parts (it never completes: see below)
        self.part_bytes = 64 << 10

def upload_then_hang(self, data):
    upload(self, data)
    if "/shards/part-" in self.key:  # a final shard, one part up: this is where the process dies
        print("UPLOADING", self.key, flush=True)
        time.sleep(600)

W.__init__, W._upload = small_parts_for_shards, upload_then_hang
from pipelines import pack
sys.exit(pack.main(sys.argv[1:]))
"""


def test_a_killed_upload_leaves_no_object_no_manifest_and_a_rerun_cleans_up(s3_bucket, tmp_path):
    import os
    import queue
    import signal
    import subprocess
    import sys
    import threading

    docs = prose.documents(limit_chars=1_200_000, multilingual=False)
    prose.write_documents(f"{s3_bucket}/docs", docs, num_shards=2)
    train_tokenizer.main(["--input", f"{s3_bucket}/docs", "--output", f"{s3_bucket}/tok", "--vocab-size", "1000"])
    argv = ["--input", f"{s3_bucket}/docs", "--tokenizer", f"{s3_bucket}/tok", "--output", f"{s3_bucket}/pack",
            "--max-seq-length", "128", "--shard-mb", "0.25", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # --debug: the job's output stays on stdout (otherwise it goes to a log file, and so would UPLOADING).
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PACK, *argv, "--debug"], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": repo}, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in iter(proc.stdout.readline, "")] + [lines.put("")],
                     daemon=True).start()
    try:
        line = ""
        while not line.startswith("UPLOADING"):
            line = lines.get(timeout=300)  # a job that never reaches a shard upload fails here, not hangs
            assert line, "the pack job ended before uploading a shard"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    key = line.split()[1]
    bucket = s3_bucket[len("s3://"):]
    assert not storage.exists(f"s3://{bucket}/{key}"), "a half-written shard is not an object"
    assert not manifest.exists(f"{s3_bucket}/pack"), "no manifest: readers refuse the output"
    uploads = storage.client().list_multipart_uploads(Bucket=bucket, Prefix="pack/").get("Uploads", [])
    assert key in [u["Key"] for u in uploads], "what is left is an incomplete upload, invisible to readers"

    assert pack.main(argv) == 0  # the rerun aborts what the killed run left, then writes everything
    assert not storage.client().list_multipart_uploads(Bucket=bucket, Prefix="pack/").get("Uploads")
    m = manifest.read(f"{s3_bucket}/pack", kind="pack")
    assert len(m["shards"]) > 1 and all(storage.sha256_uri(storage.join(f"{s3_bucket}/pack", s["path"])) == s["sha256"]
                                        for s in m["shards"])
