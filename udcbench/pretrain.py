"""Face pre-training: a ResNet-18 trunk taught to tell built-in *people* apart, for ``--weights``.

On real data the paper's methods start from a face-recognition trunk (MS-Celeb-1M: identity classification,
which is independent of expression). The quick study does the same in small: one trunk, trained once on
built-in faces of the generator's ``pretrain`` split (other people than the study's), each identity drawn
several times with its own pose, light, background, clothes and an expression drawn independently of the
identity (:meth:`~udcbench.datasets.synthetic_faces.SyntheticFaceGenerator.draw_identities`), to classify
the identity; then loaded into every method through ``--weights`` as an MS-Celeb checkpoint would be. Its
target encodes nothing of the expression (``benchmarks/pretrain_probe.py`` measures a linear probe from it to
the expression: chance). It is a torchvision-named ResNet-18 state dict (tensors only), so ``udcbench train
METHOD --weights FILE`` takes it too.

``task="landmarks"`` (regressing the 68 landmarks) is kept as a candidate to compare against, never shipped:
on these drawn faces the expression moves exactly those landmarks, so that target teaches the label under
another name.

``udcbench pretrain`` writes one; ``reproduce --study quick`` writes (or reuses) it under ``runs/pretrained/``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from udcbench.errors import UdcbenchError
from udcbench.files import read_json, write_json

#: What the checkpoint's record names each task by (and the tables' notes).
TASKS = {"identity": "identities of built-in faces (udcbench pretrain)",
         "landmarks": "landmarks of built-in faces (udcbench pretrain)"}
#: The folder under the runs folder that holds face pre-trainings.
PRETRAINED = "pretrained"
#: Faces drawn per generator call (a batch keeps the generator fast and the memory small).
DRAW_CHUNK = 250


@dataclass(frozen=True)
class FacePretraining:
    """The recipe: ``images`` faces of the generator's ``pretrain`` split at ``input_size`` px (``views`` of each
    identity for the ``identity`` task), ``epochs`` of Adam with a one-cycle schedule (the quick recipe's
    optimiser), batch ``batch_size``."""

    images: int = 2800
    epochs: int = 4
    input_size: int = 48
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    task: str = "identity"
    views: int = 8

    def validate(self) -> None:
        """Refuse, in one line, a recipe that cannot train."""
        if self.task not in TASKS:
            raise UdcbenchError(f"the pre-training task is {' or '.join(TASKS)}, not '{self.task}'")
        if self.images < self.batch_size:
            raise UdcbenchError(f"face pre-training needs at least {self.batch_size} images, got {self.images}")
        if self.epochs < 1:
            raise UdcbenchError(f"face pre-training needs at least one epoch, got {self.epochs}")
        if self.input_size < 32:
            raise UdcbenchError(f"the input size must be at least 32 px (ResNet-18's stride), got {self.input_size}")
        if self.seed < 0:
            raise UdcbenchError(f"the seed is a non-negative integer, got {self.seed}")
        if self.task == "identity" and not 2 <= self.views <= self.images // 2:
            raise UdcbenchError(f"each identity needs 2 or more views, and 2 or more identities: views {self.views}, "
                                f"images {self.images}")

    @property
    def identities(self) -> int:
        return -(-self.images // self.views)

    def steps(self) -> int:
        return self.epochs * (self.images // self.batch_size)

    def folder_name(self) -> str:
        views = f"{self.views}v-" if self.task == "identity" else ""
        return f"faces-{self.task}-{views}{self.input_size}px-s{self.seed}"


def draw_pretraining_faces(recipe: FacePretraining) -> tuple[np.ndarray, np.ndarray]:
    """The faces (N x S x S x 3 uint8, resized as the engine resizes a run's images) and their targets: the
    identity (N int64) for the ``identity`` task, the landmarks scaled to [-0.5, 0.5] of the image (N x 136
    float32) for ``landmarks``."""
    from udcbench.datasets.synthetic_faces import SyntheticFaceGenerator
    from udcbench.engine.data import resize_image

    generator = SyntheticFaceGenerator(seed=recipe.seed)
    images, targets = [], []
    for start in range(0, recipe.images, DRAW_CHUNK):
        indices = range(start, min(start + DRAW_CHUNK, recipe.images))
        if recipe.task == "identity":
            faces = generator.draw_identities("pretrain", indices, recipe.views)
            targets += [i // recipe.views for i in indices]
        else:
            faces = generator.draw_batch("pretrain", indices)
            targets += [face.landmarks / face.image.shape[1] - 0.5 for face in faces]
        images += [resize_image(face.image, recipe.input_size) for face in faces]
    if recipe.task == "identity":
        return np.stack(images), np.asarray(targets, dtype=np.int64)
    return np.stack(images), np.stack(targets).reshape(len(targets), -1).astype(np.float32)


def train_trunk(recipe: FacePretraining, images: np.ndarray, targets: np.ndarray, device: str | None = None,
                log=print) -> tuple[dict, dict]:
    """Train a torchvision ResNet-18 on ``targets`` from ``images`` (cross-entropy over the identities, or
    smooth-L1 on the landmarks); returns its trunk's state dict (``fc`` dropped, on the CPU) and how it trained
    (the mean loss of each epoch, device, precision: bf16 where the device computes it natively, else fp32; no
    fp16, which would need a loss scaler)."""
    import torch
    import torch.nn.functional as F
    import torchvision

    from udcbench.config import IMAGENET_MEAN, IMAGENET_STD
    from udcbench.engine.augment import to_input
    from udcbench.engine.runtime import runtime

    rt = runtime(device)
    amp = rt.precision(True) == "bf16"
    identity = recipe.task == "identity"
    torch.manual_seed(recipe.seed)
    outputs = int(targets.max()) + 1 if identity else targets.shape[1]
    net = rt.place(torchvision.models.resnet18(num_classes=outputs))
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=recipe.steps())
    x_all = torch.from_numpy(images)
    # landmarks in tenths of the image, so that smooth-L1 works in its linear part for the first steps only
    y_all = torch.from_numpy(targets) if identity else torch.from_numpy(targets) * 10
    generator = torch.Generator().manual_seed(recipe.seed)
    per_epoch = recipe.images // recipe.batch_size
    losses = []
    net.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(images), generator=generator)
        total = torch.zeros((), device=rt.device)
        for step in range(per_epoch):
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            x = to_input(x_all[idx].to(rt.device, non_blocking=True), IMAGENET_MEAN, IMAGENET_STD)
            y = y_all[idx].to(rt.device)
            with rt.autocast(amp):
                out = net(x).float()
            loss = F.cross_entropy(out, y) if identity else F.smooth_l1_loss(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach()
        losses.append(total.item() / per_epoch)
        if not np.isfinite(losses[-1]):
            raise UdcbenchError(f"face pre-training diverged in epoch {epoch + 1} (loss {losses[-1]})")
        log(f"face pre-training: epoch {epoch + 1}/{recipe.epochs}, {recipe.task} loss {losses[-1]:.4f}")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    return state, {"losses": losses, "device": str(rt.device), "precision": rt.precision(amp)}


def weights_task(path: Path | str, sha256: str) -> str | None:
    """What a weights file was pre-trained on when it is a face pre-training's trunk (its record beside it names
    the task and this file's checksum), else None."""
    record = read_json(Path(path).parent / "record.json")
    if isinstance(record, dict) and record.get("sha256") == sha256 and isinstance(record.get("task"), str):
        return record["task"]
    return None


def pretrained_trunk(folder: Path, recipe: FacePretraining = FacePretraining(), device: str | None = None,
                     log=print) -> Path:
    """``folder/trunk.pt``, trained now unless ``folder`` holds a finished one of the same recipe; its record
    (``folder/record.json``: recipe, losses, device, precision, minutes, checksum) is written after it, so a
    record means a complete checkpoint. A folder with other content is refused, never replaced."""
    from baselines.backbone import sha256_file
    from udcbench.checkpoints import save_checkpoint

    folder = Path(folder)
    trunk, record_path = folder / "trunk.pt", folder / "record.json"
    record = read_json(record_path)
    if record is not None:
        if record.get("recipe") == asdict(recipe) and trunk.is_file() and sha256_file(trunk) == record["sha256"]:
            return trunk
        raise UdcbenchError(f"{folder} holds a face pre-training of another recipe or a changed trunk.pt; move it "
                            "away or pass another --out")
    if folder.is_dir() and any(p.name != trunk.name for p in folder.iterdir()):
        raise UdcbenchError(f"{folder} is not empty and holds no face pre-training; pass another --out")
    start = time.perf_counter()
    people = f" ({recipe.identities} identities)" if recipe.task == "identity" else ""
    log(f"face pre-training on {recipe.task}: {recipe.images} built-in faces{people} at {recipe.input_size} px, "
        f"{recipe.epochs} epochs -> {trunk}")
    images, targets = draw_pretraining_faces(recipe)
    state, how = train_trunk(recipe, images, targets, device, log)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state, trunk)
    write_json(record_path, {"task": TASKS[recipe.task], "recipe": asdict(recipe), **how,
                             "minutes": (time.perf_counter() - start) / 60, "sha256": sha256_file(trunk)})
    return trunk
