"""Register every deployment of prefect.yaml on a Prefect server, creating the work pools they name first.

    python -m flows.deploy              # against PREFECT_API_URL (`source .demo/env` for the local stack)
    python -m flows.deploy --dry-run    # say which pools would be created, change nothing

`prefect deploy --all` alone fails on a fresh server ("references work pool 'electra-k8s' which
does not exist"): a deployment cannot name a pool that is not there yet. The pools' types live
here, not in prefect.yaml, because Prefect's deployment schema has no field for them.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import yaml

from common.cli import run_job
from common.processes import REPO


class DeployError(Exception):
    """Something the user fixes: a pool without a type, an unreachable server, a refused `prefect` command."""

# The worker type of each pool prefect.yaml names (docs/orchestration.md says what runs where).
POOL_TYPES = {
    "electra-k8s": "kubernetes",   # Large and Base: the flow in a small pod, training on the cluster
    "electra-gpu": "process",      # Small and the scheduled report: a process worker on a GPU node
    "local-process": "process",    # the demo: a process worker on this machine
}


@dataclasses.dataclass(frozen=True)
class DeployPlan:
    deployments: list[str]
    pools: dict[str, str]  # name -> worker type, every pool the deployments name


def plan(spec_path: Path = REPO / "prefect.yaml") -> DeployPlan:
    """The deployments of prefect.yaml and the pools they need, with their types."""
    spec = yaml.safe_load(spec_path.read_text())
    names, pools = [], {}
    for dep in spec.get("deployments") or []:
        names.append(dep["name"])
        pool = (dep.get("work_pool") or {}).get("name")
        if pool is None:
            continue
        if pool not in POOL_TYPES:
            raise DeployError(f"deployment {dep['name']!r} names work pool {pool!r}, which flows/deploy.py "
                            f"has no type for; add it to POOL_TYPES ({', '.join(sorted(POOL_TYPES))})")
        pools[pool] = POOL_TYPES[pool]
    return DeployPlan(names, pools)


def missing_pools(pools: dict[str, str]) -> dict[str, str]:
    """The pools the server does not have yet (read through the API: a CLI round trip per pool is slow)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    import httpx
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        # Without it the client starts a throwaway server and the deployments would vanish with it.
        raise DeployError("PREFECT_API_URL is not set: point it at your Prefect server "
                          "(for the local stack: source .demo/env)")
    missing = {}
    try:
        with get_client(sync_client=True) as client:
            for name, kind in pools.items():
                try:
                    client.read_work_pool(name)
                except ObjectNotFound:
                    missing[name] = kind
    except httpx.HTTPError as exc:
        raise DeployError(f"the Prefect API at {PREFECT_API_URL.value()} did not answer "
                          f"({type(exc).__name__}); set PREFECT_API_URL (for the local stack: source .demo/env)") from exc
    return missing


def _prefect(*args: str) -> None:
    exe = Path(sys.executable).parent / "prefect"
    out = subprocess.run([str(exe) if exe.exists() else "prefect", *args], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        tail = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise DeployError(f"prefect {' '.join(args[:3])} failed (exit {out.returncode}): {tail[0]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print the pools that would be created and stop")
    args = ap.parse_args(argv)

    def job() -> str:
        p = plan()
        new = missing_pools(p.pools)
        for name, kind in sorted(new.items()):
            print(f"work pool {name} ({kind}): {'would be created' if args.dry_run else 'creating'}")
            if not args.dry_run:
                # The CLI, not the API: it fills in the worker type's default base job template.
                _prefect("work-pool", "create", name, "--type", kind)
        if args.dry_run:
            return f"{len(new)} of {len(p.pools)} work pools missing; nothing changed (--dry-run)"
        _prefect("--no-prompt", "deploy", "--all")
        return f"{len(p.deployments)} deployments registered ({', '.join(p.deployments)}); {len(new)} work pools created"

    return run_job(job, (DeployError,), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
