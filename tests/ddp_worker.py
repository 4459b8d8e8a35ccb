"""Run under ``torchrun`` by ``tests/test_ddp.py`` (not a test module): trains every registered method at the smoke
budget through the CLI, in one process group, and writes per method whether every rank ended with the same
weights. Usage: torchrun --nproc_per_node 2 tests/ddp_worker.py WORKSPACE OUT.json"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from baselines import distributed
from udcbench.cli import app, silence_other_ranks
from udcbench.engine import trainer
from udcbench.methods import method_names

workspace, out = Path(sys.argv[1]), Path(sys.argv[2])
os.chdir(workspace)
silence_other_ranks()
final: dict = {}
real_save = trainer.save_epoch


def keep_model(state, *args, **kwargs):
    final["model"] = state.model
    return real_save(state, *args, **kwargs)


trainer.save_epoch = keep_model
report = {}
for method in method_names(include_test=True):
    final.clear()
    code = app(["train", method, "--data", "data/synthetic", "--preset", "smoke", "--device", "cpu", "--json"],
               standalone_mode=False)
    if code:
        raise SystemExit(f"{method}: exit status {code}")
    state = final["model"].state_dict()
    sums = torch.stack([v.double().sum() for v in state.values()])
    gathered = distributed.all_gather_cat(sums[None])
    report[method] = {"same_weights": bool((gathered == gathered[0]).all()), "tensors": len(state)}
if distributed.rank() == 0:
    out.write_text(json.dumps(report))
distributed.barrier()
