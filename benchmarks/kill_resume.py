"""A study killed during one of its stages and run again ends with the tables of an uninterrupted one, at full size.

    python benchmarks/kill_resume.py [--study quick] [--kill-at "lrdif-s1 epoch"] [--workspace DIR] [--whole DIR]

Runs ``udcbench reproduce --study STUDY`` as a user would (its own built-in faces; the precision as the environment
says, ``UDCBENCH_CPU_BF16``) in two workspaces under DIR: ``whole`` uninterrupted (or ``--whole``, a finished
study's workspace, e.g. ``reproduce_time.py --workspace``'s), and ``killed`` SIGKILLed at the first line of its log
that holds ``--kill-at`` (default: a few steps into LRDif's first stage on the clean faces), then run again with the
same command. Compares every table the two write (``results/tables/*.csv``) byte for byte, and writes
``benchmarks/results/kill_resume.csv``: the study, where it was killed, each run's minutes, the tables compared
and how many differ, and the commit that trained the runs. ``tests/test_kill.py`` does the same for the smoke study
at every stage; this is the check at a real size. About twice the study's time.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from udcbench.engine.runs import STORE
from udcbench.engine.store import load_results
from udcbench.workspace import WORKSPACE_VARS

from _common import machine, merge_previous, report


def study(root: Path, name: str, kill_at: str = "") -> tuple[float, bool]:
    """Run the study in ``root`` (its log in ``root/reproduce.log``); with ``kill_at``, SIGKILL it at the first log
    line holding it. Returns the minutes and whether it was killed (a stage finished earlier is not met again)."""
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in WORKSPACE_VARS}  # the workspace's own folders
    start = time.perf_counter()
    killed = False
    with open(root / "reproduce.log", "a") as log:
        process = subprocess.Popen([sys.executable, "-m", "udcbench", "reproduce", "--study", name], cwd=root,
                                   env=env, stdout=log, stderr=subprocess.PIPE, text=True)
        for line in process.stderr:
            log.write(line)
            if kill_at and kill_at in line:
                process.send_signal(signal.SIGKILL)
                killed = True
                break
        process.wait()
    if not killed and process.returncode != 0:
        raise SystemExit(f"the study in {root} failed (exit status {process.returncode}): see {root}/reproduce.log")
    return (time.perf_counter() - start) / 60, killed


def tables(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "results" / "tables").glob("*.csv"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="quick")
    parser.add_argument("--kill-at", default="lrdif-s1 epoch", help="kill at the first log line holding this")
    parser.add_argument("--workspace", type=Path, help="where to run both (default: a temporary folder)")
    parser.add_argument("--whole", type=Path, help="a finished study's workspace to compare with, run with the same "
                        "precision (instead of running one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.workspace or Path(tmp)).resolve()
        whole_root = args.whole.resolve() if args.whole else root / "whole"
        whole_minutes, _ = study(whole_root, args.study)  # a finished study's is read back in seconds
        killed_minutes, killed = study(root / "killed", args.study, args.kill_at)
        again_minutes, _ = study(root / "killed", args.study)
        whole, resumed = tables(whole_root), tables(root / "killed")
        records = [r["record"] for r in load_results(root / "killed" / "runs" / STORE) if r["kind"] == "train"]
    differ = sorted(n for n in whole.keys() | resumed.keys() if whole.get(n) != resumed.get(n))
    row = {"study": args.study, "killed_at": args.kill_at, "killed": killed,
           "minutes_uninterrupted": "" if args.whole else whole_minutes,  # --whole's study was only read back
           "minutes_until_killed": killed_minutes, "minutes_rerun": again_minutes, "tables": len(whole),
           "tables_differing": len(differ), "differing": " ".join(differ), "machine": machine(),
           "commit": next((r.get("git_commit") for r in records if r.get("git_commit")), "")}
    report("kill_resume", "A study killed and run again against an uninterrupted one",
           merge_previous("kill_resume", [row], ("study", "killed_at")))
    if differ or not killed or not whole:
        raise SystemExit(f"killed: {killed}; tables: {len(whole)}; differing: {differ}")


if __name__ == "__main__":
    main()
