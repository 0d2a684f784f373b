"""`make demo`: the whole system on this machine, through a real Prefect deployment.

    make demo            # = .venv/bin/python -m flows.demo
    make demo-stop       # stops the local stack (data stays in .demo/)

1. starts the local stack (flows/localstack.py): SeaweedFS S3, a Prefect server on SQLite, a process worker;
2. builds a small real-text WARC corpus from documentation already on this machine
   (`pipelines.local_corpus`) and uploads it to s3://electra-demo/corpus/; uploads the
   GLUE/SQuAD fixture mirror in official formats (tests/data) to s3://electra-demo/eval-data/
   (no Hub downloads: the scores are from a few dozen examples and say only that the path works);
3. `prefect deploy --name electra-demo`, then `prefect deployment run electra-pretraining/electra-demo`;
4. follows the flow run, stage by stage, and prints where every output is.

Run it again and the finished stages are reused (the flow says which).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from common import storage
from flows.localstack import REPO, LocalStack

BUCKET = "s3://electra-demo"
CORPUS = f"{BUCKET}/corpus"
EVAL_DATA = f"{BUCKET}/eval-data"
FLOW = "electra-pretraining"
DEPLOYMENT = f"{FLOW}/electra-demo"
STAGES = ("clean", "train-tokenizer", "pack", "pretrain", "export", "evaluate", "publish")


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_inputs(stack: LocalStack, corpus_mb: float) -> None:
    """The demo corpus and evaluation mirror in the local bucket (once; later runs reuse them)."""
    env = stack.child_env()
    settings = storage.StorageSettings(endpoint_url=env["AWS_ENDPOINT_URL"], access_key_id=env["AWS_ACCESS_KEY_ID"],
                                       secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    storage.make_bucket(BUCKET, settings)
    if storage.list_files(CORPUS + "/", settings):
        say(f"corpus already in {CORPUS}/ (reused)")
    else:
        local = stack.base / "corpus"
        say(f"building a {corpus_mb:g} MB real-text WARC corpus from local documentation -> {local}")
        subprocess.run([sys.executable, "-m", "pipelines.local_corpus", "--output", str(local), "--max-mb",
                        str(corpus_mb), "--format", "warc", "--file-mb", str(max(corpus_mb / 2, 0.5))],
                       check=True, cwd=str(REPO), env=env)
        n = storage.upload_dir(str(local), CORPUS, settings)
        say(f"uploaded {len(n)} corpus files to {CORPUS}/")
    if storage.list_files(EVAL_DATA + "/", settings):
        return
    mirror = REPO / "tests" / "data"
    for sub in ("glue", "squad"):
        if (mirror / sub).is_dir():
            storage.upload_dir(str(mirror / sub), f"{EVAL_DATA}/{sub}", settings)
    say(f"uploaded the GLUE/SQuAD fixture mirror ({mirror}) to {EVAL_DATA}/")


def start_run(stack: LocalStack, params: dict[str, object], deployment: str = DEPLOYMENT) -> str:
    args = ["deployment", "run", deployment]
    for k, v in params.items():
        args += ["--param", f"{k}={json.dumps(v)}"]
    out = stack.prefect(*args)
    m = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
    if not m:
        raise RuntimeError(f"could not read the flow run id from `prefect {' '.join(args)}`:\n{out.stdout}")
    return m.group(1)


def watch(stack: LocalStack, flow_run_id: str, timeout_s: float, run_name: str | None = None) -> str:
    """Print each stage's state changes and pretraining's progress until the flow run ends; returns its final state."""
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    seen: dict[str, str] = {}
    t0 = time.monotonic()
    with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        while True:
            fr = client.read_flow_run(flow_run_id)
            state = fr.state.name if fr.state else "?"
            if seen.get("flow") != state:
                seen["flow"] = state
                say(f"flow run {fr.name}: {state}")
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id])))
            for tr in sorted(runs, key=lambda r: r.expected_start_time or r.created):
                name = tr.task_key.split(".")[-1] if not tr.name else tr.name.rsplit("-", 1)[0]
                st = tr.state.name if tr.state else "?"
                if seen.get(tr.name) != st:
                    seen[tr.name] = st
                    say(f"  {name:<16} {st}")
                if run_name and name == "pretrain" and st == "Running":
                    art = Artifact.get(f"{run_name}-pretrain-progress")
                    if art is not None and art.flow_run_id == fr.id and art.data is not None:
                        pct = int(float(art.data)) // 10 * 10
                        if pct and seen.get("progress") != str(pct):
                            seen["progress"] = str(pct)
                            say(f"  {'':<16} {pct}% of the steps")
            if fr.state and fr.state.is_final():
                return state
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"flow run {flow_run_id} still {state} after {timeout_s:.0f}s")
            time.sleep(3)


def report_locations(stack: LocalStack, flow_run_id: str, run_name: str) -> dict:
    env = stack.child_env()
    settings = storage.StorageSettings(endpoint_url=env["AWS_ENDPOINT_URL"], access_key_id=env["AWS_ACCESS_KEY_ID"],
                                       secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    summary = json.loads(storage.read_text(f"{BUCKET}/{run_name}/_flow/summary.json", settings))
    st = summary["stages"]

    def out(k: str, sub: str = "") -> str:
        return storage.join(st[k]["output"], sub) if st.get(k) else "(not run)"

    reused = [k for k, v in st.items() if v and v["skipped"]]
    lines = [
        f"documents   {out('documents', 'documents/')}",
        f"shards      {out('pack', 'shards/')}",
        f"checkpoints {storage.parent(out('checkpoint')) + '/' if st.get('checkpoint') else '(not run)'}",
        f"model       {out('model')}",
        f"report      {out('report', 'report.html')}",
        f"published   {out('published')}  (model card: README.md)",
        f"Prefect UI  {stack.ui_url}/runs/flow-run/{flow_run_id}",
        f"lineage     .venv/bin/python -m flows.lineage {out('published')}  (after `source {stack.base}/env`)",
    ]
    print("\n" + "\n".join(lines))
    if reused:
        print(f"\nreused from an earlier run (cache hit on input manifests + config): {', '.join(reused)}")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=str(REPO / ".demo"), help="local stack state (default: %(default)s)")
    ap.add_argument("--corpus-mb", type=float, default=15.0,
                    help="HTML payload of the demo corpus; ~1 page in 4 survives cleaning (default: %(default)s)")
    ap.add_argument("--run-name", default="demo")
    ap.add_argument("--timeout", type=float, default=1800)
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    stack = LocalStack(Path(a.dir))
    say(f"starting the local stack in {stack.base} (SeaweedFS, Prefect server on SQLite, process worker)")
    stack.start()
    say(f"Prefect UI: {stack.ui_url}")
    prepare_inputs(stack, a.corpus_mb)
    say("prefect deploy --name electra-demo")
    stack.deploy("electra-demo")
    say(f"prefect deployment run {DEPLOYMENT}")
    params = {"run_name": a.run_name} if a.run_name != "demo" else {}
    run_id = start_run(stack, params)
    say(f"flow run {run_id}: {stack.ui_url}/runs/flow-run/{run_id}")
    final = watch(stack, run_id, a.timeout, a.run_name)
    if final != "Completed":
        say(f"the flow run ended {final}: see the UI above, or {stack.base}/worker.log")
        return 1
    report_locations(stack, run_id, a.run_name)
    say(f"done in {time.monotonic() - t0:.0f}s; the stack keeps running (UI above); `make demo-stop` stops it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
