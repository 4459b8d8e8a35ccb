"""A study killed anywhere continues with the same command and ends with the tables of an uninterrupted one
(issue 42): SIGKILL during synthesis, a stage 1, a stage 2, the robustness sweep and the figures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from udcbench.datasets.generate import generate_synthetic

from conftest import module_folder

pytestmark = [pytest.mark.slow(reason="smoke studies killed and resumed, serial and on two slots: about 2.5 min"),
              pytest.mark.xdist_group("kill")]  # one worker builds the module's uninterrupted study once

COMMAND = [sys.executable, "-m", "udcbench", "reproduce", "--study", "smoke", "--methods", "resnet18", "--methods",
           "lrdif"]
#: Where to kill: the first stderr line of each stage (reproduce's log).
STAGES = ("synthesising", "training lrdif-s1", "training lrdif (", "UDC-C sweep of", "drawing the figures")


def _workspace(root: Path) -> Path:
    generate_synthetic(root / "data" / "synthetic", n_train=56, n_test=21, size=48)
    return root


def _env() -> dict:
    """The study's environment: quiet, and on one thread per process, so that a serial run and runs side by side
    do the same arithmetic (and give the same numbers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UDCBENCH_")}
    return {**env, "UDCBENCH_QUIET": "1", "OMP_NUM_THREADS": "1"}


def _killed_at(root: Path, marker: str) -> bool:
    """Run the study and SIGKILL it at the first stderr line holding ``marker``; whether it was killed there (a stage
    already finished by an earlier run is not met again)."""
    process = subprocess.Popen(COMMAND, cwd=root, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    for line in process.stderr:
        if marker in line:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
    process.wait()
    assert process.returncode == 0
    return False


def _tables(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((root / "results" / "tables").glob("*.csv"))}


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> dict[str, str]:
    """The tables of the study run once, uninterrupted and serial, on one thread (what both tests compare with)."""
    with module_folder(tmp_path_factory, "whole") as folder:
        root = _workspace(folder)
        result = subprocess.run(COMMAND, cwd=root, env=_env(), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return _tables(root)


def test_a_study_killed_at_every_stage_ends_with_the_tables_of_an_uninterrupted_one(tmp_path, whole):
    killed = _workspace(tmp_path / "killed")
    met = [marker for marker in STAGES if _killed_at(killed, marker)]
    assert len(met) >= 4, met  # killed in most stages (a fast one may end before its line is read)
    final = subprocess.run(COMMAND, cwd=killed, env=_env(), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-3000:]
    assert _tables(killed) == whole and len(whole) >= 4


def test_a_study_on_two_cpu_slots_orders_its_stages_resumes_a_killed_slot_and_matches_the_serial_one(tmp_path,
                                                                                                    whole):
    import re

    slots = _workspace(tmp_path / "slots")
    process = subprocess.Popen([*COMMAND, "--slots", "2"], cwd=slots, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = []
    for line in process.stderr:  # kill the slot that trains the clean data's stage 1 as soon as it starts
        said.append(line)
        found = re.search(r"\(pid (\d+)\): lrdif-s1 -> .*/synthetic/", line)
        if found:
            os.kill(int(found.group(1)), signal.SIGKILL)
    process.wait()
    assert process.returncode == 2, "".join(said[-5:])
    assert "did not finish" in said[-1] and "Run the same command again" in said[-1]
    again = subprocess.run([*COMMAND, "--slots", "2"], cwd=slots, env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = slots / "runs"
    for data in ("synthetic", "udc-synthetic"):  # each second stage started after its first stage had finished
        first = (runs / data / "lrdif-s1-smoke-s0" / "results.json").stat().st_mtime
        assert first <= (runs / data / "lrdif-smoke-s0" / "config.json").stat().st_mtime
    assert len(list((runs / "logs").glob("*.log"))) == 7
    assert _tables(slots) == whole
