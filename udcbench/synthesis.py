"""``udcbench synth``: write a degraded copy of a dataset in the source's own layout.

Every image of the source folder is degraded (label files and other files are copied), so any
adapter, and other projects' training code, reads the output unchanged. The output holds:

- the degraded images, written atomically (temporary file + rename);
- ``manifest.jsonl``: one line per image once it is on disk (per-image parameters, source and
  output sha256), or per skipped image (path and reason);
- ``manifest.json``: recipe, package version, seed, source, counts (written first, completed last);
- ``preview.png``: clean against degraded, a few images per class.

Per-image parameters come from a seed derived from (recipe, seed, file), and images are degraded
in fixed chunks of the sorted file list, so the output is byte-identical whatever the number of
workers or shards and whether or not the run was interrupted and resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from degradations import Recipe, build_degradation
from degradations.functional import to_uint8
from udcbench import __version__
from udcbench.datasets.base import IMAGE_SUFFIXES, DatasetAdapter
from udcbench.errors import UdcbenchError
from udcbench.files import (
    folder_lock,
    overlaps,
    points_outside,
    remove_own_output,
    remove_stale_temporaries,
    temp_path,
    walk_files,
    write_atomic,
)
from udcbench.images import ImageTooLarge, decode, encode
from udcbench.labels import CANONICAL_LABELS
from udcbench.progress import progress_bar
from udcbench.workers import worker_pool

CHUNK = 64
#: The memory one synthesis batch may take (``UDCBENCH_SYNTH_MEMORY_GB``, default 2 GB): a chunk's images of one
#: size are degraded in batches sized by :func:`image_bytes` to stay within it, and a recipe whose one image needs
#: more is refused before anything is written.
SYNTH_MEMORY_GB = 2.0
#: Working copies per image and channel in the degradation (the padded image, its FFT and the kernel's, products).
_WORKING_COPIES = 6
MANIFEST = "manifest.json"
PREVIEW = "preview.png"
_OWN_FILES = {MANIFEST, PREVIEW}


def _is_own(name: str) -> bool:
    return name in _OWN_FILES or (name.startswith("manifest") and name.endswith(".jsonl"))


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise UdcbenchError(f"--shard must look like i/n (e.g. 0/4), got '{text}'") from None
        if n < 1 or not 0 <= i < n:
            raise UdcbenchError(f"--shard {text}: need 0 <= i < n")
        return cls(i, n)

    @property
    def journal(self) -> str:
        return "manifest.jsonl" if self.count == 1 else f"manifest.shard-{self.index}-of-{self.count}.jsonl"


@dataclass
class SynthReport:
    written: int = 0
    already_done: int = 0
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    total: int = 0
    complete: bool = False
    #: Other files (not images) that link outside the dataset: listed, never copied.
    not_copied: list[str] = field(default_factory=list)


def image_seed(recipe: Recipe | str, seed: int, rel: str) -> int:
    """The per-image generator seed: a function of (recipe, or a recipe's digest, seed, file) only."""
    key = recipe if isinstance(recipe, str) else recipe.digest
    digest = hashlib.sha256(f"{key}:{seed}:{rel}".encode(errors="surrogateescape")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def source_files(src: Path) -> tuple[list[str], list[str], list[str]]:
    """(image files, other files, other files not copied) under ``src``, relative POSIX paths, sorted; our own
    outputs excluded. Symlinked folders and images are followed wherever they point; a symlinked other file
    whose target lies outside the dataset (and the folders it links to) is listed apart and never copied."""
    images, others, refused = [], [], []
    linked = [p.resolve() for p in Path(src).rglob("*") if p.is_symlink() and p.is_dir()]
    for rel, path in walk_files(src):
        if _is_own(rel):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(rel)
        else:
            (refused if points_outside(path, src, linked) else others).append(rel)
    return images, others, refused


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def memory_budget() -> int:
    """Bytes one synthesis batch may take (:data:`SYNTH_MEMORY_GB`, or ``UDCBENCH_SYNTH_MEMORY_GB``)."""
    from udcbench.config import env_number

    return int(env_number("UDCBENCH_SYNTH_MEMORY_GB", SYNTH_MEMORY_GB, 0.01, 4096, "gigabytes") * 2**30)


def image_bytes(module, psf_scale: float, height: int, width: int) -> int:
    """About the memory the degradation of one ``height x width`` image takes at ``psf_scale``: its padded planes
    (the image plus the largest kernel on the dataset's grid) in complex float32, times the working copies."""
    sides = [k.shape[-1] for k in (getattr(module, "psf", None) and module.psf(psf_scale),
                                   getattr(module, "halo", None) and module.halo(psf_scale)) if k is not None]
    pad = max(sides, default=0)
    return 3 * (height + pad) * (width + pad) * 8 * _WORKING_COPIES


def batches_within(rels: list[str], per_image: int, budget: int) -> list[list[str]]:
    """``rels`` in consecutive batches of at most ``budget // per_image`` images (the same split on every run, so
    the output stays byte-identical)."""
    size = max(1, budget // max(per_image, 1))
    return [rels[i : i + size] for i in range(0, len(rels), size)]


# -- the work of one chunk (runs in worker processes) -----------------------------------------------------
_module_cache: dict[str, torch.nn.Module] = {}


def degradation_module(recipe: Recipe, cache_dir: str | None) -> torch.nn.Module:
    """The degradation of ``recipe``, built once per process (its PSFs are costly to make)."""
    if recipe.digest not in _module_cache:
        _module_cache[recipe.digest] = build_degradation(recipe, Path(cache_dir) if cache_dir else None)
    return _module_cache[recipe.digest]


def degrade_chunk(src: str, out: str, files: list[str], todo: list[str], recipe: Recipe, dataset: str, seed: int,
                  cache_dir: str | None) -> list[dict]:
    """Degrade one fixed chunk; write (and return manifest entries for) the files in ``todo``.

    The whole chunk is computed even when only part of it is to be written: the batch composition
    (and so every float operation) is then the same on every run.
    """
    torch.set_num_threads(1)  # identical arithmetic in every process
    module = degradation_module(recipe, cache_dir)
    entries, decoded = [], {}
    for rel in files:
        data = (Path(src) / rel).read_bytes()
        try:
            image = decode(data, cv2.IMREAD_COLOR) if data else None
            error = "not a decodable image (corrupt or unsupported format)"
        except ImageTooLarge as exc:
            image, error = None, str(exc)
        if image is None:
            if rel in todo:
                entries.append({"file": rel, "error": error})
            continue
        decoded[rel] = (cv2.cvtColor(image, cv2.COLOR_BGR2RGB), _sha256(data))
    groups: dict[tuple[int, int], list[str]] = {}
    for rel, (image, _) in decoded.items():
        groups.setdefault(image.shape[:2], []).append(rel)
    quality = int(recipe.raw.get("jpeg_quality", 95))
    budget = memory_budget()
    batches = [((h, w), part) for (h, w), rels in groups.items()
               for part in batches_within(rels, image_bytes(module, recipe.psf_scale(dataset, w), h, w), budget)]
    for (_, width), rels in batches:
        x = torch.from_numpy(np.stack([decoded[r][0] for r in rels])).permute(0, 3, 1, 2).float() / 255.0
        gens = [torch.Generator().manual_seed(image_seed(recipe, seed, r)) for r in rels]
        psf_scale = recipe.psf_scale(dataset, width)
        with torch.no_grad():
            y = to_uint8(module(x, psf_scale=psf_scale, generator=gens)).permute(0, 2, 3, 1).numpy()
        params = module.params
        for i, rel in enumerate(rels):
            if rel not in todo:
                continue
            data = encode(y[i], Path(rel).suffix.lower(), quality)
            write_atomic(Path(out) / rel, data)
            entries.append({
                "file": rel,
                "psf_scale": round(psf_scale, 6),
                "params": {k: v[i].tolist() for k, v in params.items()},
                "source_sha256": decoded[rel][1],
                "sha256": _sha256(data),
            })
    return entries


# -- orchestration --------------------------------------------------------------------------------------
def read_journals(out: Path) -> dict[str, dict]:
    """Entries of every manifest*.jsonl under ``out`` (a torn last line from a kill is ignored)."""
    done: dict[str, dict] = {}
    for journal in sorted(out.glob("manifest*.jsonl")):
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "error" in entry or (out / entry["file"]).is_file():
                done[entry["file"]] = entry
    return done


def _repair_journal(path: Path) -> None:
    """Cut a line torn by a kill, so that appended entries start on a line of their own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _header(recipe: Recipe, seed: int, adapter: DatasetAdapter, src: Path, n_images: int) -> dict:
    return {
        "udcbench_version": __version__,
        "dataset": adapter.origin,
        "adapter": adapter.name,
        "source": str(src.resolve()),
        "recipe": recipe.raw,
        "recipe_name": recipe.name,
        "recipe_source": recipe.source,
        "recipe_sha256": recipe.digest,
        "seed": seed,
        "images": n_images,
        "chunk": CHUNK,
    }


def _check_output(out: Path, src: Path, header: dict, resume: bool, overwrite: bool) -> None:
    if overlaps(out, src):
        raise UdcbenchError(f"refusing to write into the source folder: --out {out} overlaps --src {src}")
    if not out.exists() or not any(out.iterdir()):
        return
    if overwrite:
        remove_own_output(out, "synth output")
        return
    if not resume:
        raise UdcbenchError(f"{out} is not empty; pass --resume to continue it or --overwrite to replace it")
    try:
        previous = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        raise UdcbenchError(f"{out} has no readable {MANIFEST}: it is not a udcbench synth output") from None
    for key in ("recipe_sha256", "seed", "source"):
        if previous.get(key) != header[key]:
            raise UdcbenchError(
                f"cannot resume {out}: it was made with another {key.replace('_sha256', '')} "
                f"({previous.get(key)!r}, now {header[key]!r}); use --overwrite"
            )


def _check_every_listed_image(adapter: DatasetAdapter, src: Path, entries: dict) -> None:
    """Every image the adapter lists (what train reads) was written or skipped and listed: the output is never
    silently a part of the dataset."""
    listed = [r.path for r in adapter.records() if r.path is not None]
    missing = [p for p in listed if Path(p).is_relative_to(src) and Path(p).relative_to(src).as_posix() not in entries]
    if missing:
        raise UdcbenchError(f"synth covered {len(listed) - len(missing)} of the {len(listed)} images the "
                            f"{adapter.name} adapter lists (e.g. {missing[0]} is missing): the output is incomplete "
                            "and not marked complete")


def synthesize(adapter: DatasetAdapter, out: Path, recipe: Recipe, seed: int = 0, workers: int = 1,
               shard: Shard = Shard(), resume: bool = False, overwrite: bool = False,
               cache_dir: Path | None = None) -> SynthReport:
    """Degrade every image of ``adapter.root`` into ``out`` (same layout). See the module docstring. One writer
    per output and shard: a second is refused in one line (the lock lies beside ``out``)."""
    with folder_lock(Path(f"{out}.{shard.journal}"), "synth output (shard)"):
        return _synthesize(adapter, Path(out), recipe, seed, workers, shard, resume, overwrite, cache_dir)


def _check_memory(module, recipe: Recipe, dataset: str, first: Path) -> None:
    """Refuse, before anything is written, a recipe whose one image (the dataset's first, by its header) would take
    more than the memory budget."""
    from udcbench.images import declared_size

    size = declared_size(first.read_bytes()[:1 << 16]) if first.is_file() else None
    if size is not None:
        check_image_memory(module, recipe, dataset, *size)


def check_image_memory(module, recipe: Recipe, dataset: str, width: int, height: int) -> None:
    """Refuse a recipe whose one ``width`` x ``height`` image would take more than the memory budget."""
    need = image_bytes(module, recipe.psf_scale(dataset, width), height, width)
    if need > memory_budget():
        raise UdcbenchError(f"recipe {recipe.name} needs about {need / 2**30:.1f} GB per {width} x {height} image, "
                            f"over the synthesis memory budget of {memory_budget() / 2**30:.1f} GB "
                            "(UDCBENCH_SYNTH_MEMORY_GB): a smaller kernel_px or psf_scale, or a larger budget")


def _synthesize(adapter: DatasetAdapter, out: Path, recipe: Recipe, seed: int, workers: int, shard: Shard,
                resume: bool, overwrite: bool, cache_dir: Path | None) -> SynthReport:
    src = adapter.root
    if src is None:
        raise UdcbenchError("synth needs a dataset folder")
    out = Path(out)
    images, others, refused = source_files(src)
    if not images:
        raise UdcbenchError(f"no image files under {src} (FERPlus from fer2013.csv: render the PNG folders first)")
    dataset = adapter.origin
    adapter.records()  # a malformed label file fails here, before any image is written
    try:
        module = degradation_module(recipe, cache_dir)  # so does the recipe's PSF (a missing or unreadable file)
    except (OSError, ValueError) as exc:
        raise UdcbenchError(f"recipe {recipe.name}: {exc}") from None
    _check_memory(module, recipe, dataset, src / images[0])
    header = _header(recipe, seed, adapter, src, len(images))
    # Shards of one run share the output folder: each may find the others already there.
    _check_output(out, src, header, resume or shard.count > 1, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # what a killed earlier run left mid-write
    if not (out / MANIFEST).is_file():
        write_atomic(out / MANIFEST, json.dumps({**header, "complete": False}, indent=2) + "\n")
    for rel in others:  # label files and the like, verbatim
        target = out / rel
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(target)
            shutil.copy2(src / rel, tmp)
            os.replace(tmp, target)

    _repair_journal(out / shard.journal)
    done = read_journals(out)
    chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]
    mine = [c for k, c in enumerate(chunks) if k % shard.count == shard.index]
    report = SynthReport(total=sum(len(c) for c in mine))
    jobs = [(c, [f for f in c if f not in done]) for c in mine]
    report.already_done = sum(len(c) - len(todo) for c, todo in jobs)
    jobs = [(c, todo) for c, todo in jobs if todo]
    args = (str(src), str(out))
    extra = (recipe, dataset, seed, str(cache_dir) if cache_dir else None)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    with (out / shard.journal).open("a") as journal, progress_bar() as bar:
        task = bar.add_task(f"synth {recipe.name}", total=report.total, completed=report.already_done)

        def record(entries: list[dict]) -> None:
            for entry in entries:
                journal.write(json.dumps(entry) + "\n")
                if "error" in entry:
                    report.skipped.append(entry)
                else:
                    report.written += 1
            journal.flush()
            bar.advance(task, len(entries))

        try:
            if workers > 1:
                with worker_pool(workers) as pool:
                    futures = [pool.submit(degrade_chunk, *args, c, todo, *extra) for c, todo in jobs]
                    for future in futures:
                        record(future.result())
            else:
                for c, todo in jobs:
                    record(degrade_chunk(*args, c, todo, *extra))
        finally:
            torch.set_num_threads(threads)
    report.seconds = time.perf_counter() - start

    report.not_copied = refused
    entries = read_journals(out)
    report.complete = all(f in entries for f in images)
    if report.complete:
        _check_every_listed_image(adapter, src, entries)
        skipped = [e for e in entries.values() if "error" in e]
        summary = {**header, "complete": True, "written": len(entries) - len(skipped), "skipped": skipped,
                   "not_copied": refused, "journals": sorted(p.name for p in out.glob("manifest*.jsonl"))}
        write_atomic(out / MANIFEST, json.dumps(summary, indent=2) + "\n")
        write_preview(adapter, out, out / PREVIEW)
    return report


def _preview_pairs(adapter: DatasetAdapter, out: Path, per_class: int) -> Iterator[tuple[int, Path, Path]]:
    counts: dict[int, int] = {}
    for record in adapter.records():
        if record.path is None or counts.get(record.label, 0) >= per_class:
            continue
        degraded = out / record.path.relative_to(adapter.root)
        if degraded.is_file():
            counts[record.label] = counts.get(record.label, 0) + 1
            yield record.label, record.path, degraded


def write_preview(adapter: DatasetAdapter, out: Path, path: Path, per_class: int = 4, tile: int = 192) -> None:
    """A grid: one row per class, ``per_class`` (clean | degraded) pairs per row."""
    rows: dict[int, list[np.ndarray]] = {}
    for label, clean, degraded in _preview_pairs(adapter, out, per_class):
        pair = []
        for file in (clean, degraded):
            try:  # never cv2.imread: OpenCV crashes on a file name that is not UTF-8
                image = decode(np.fromfile(file, dtype=np.uint8))
            except (OSError, ImageTooLarge):
                image = None
            if image is None:
                break
            pair.append(cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA))
        if len(pair) == 2:
            rows.setdefault(label, []).extend([pair[0], pair[1], np.full((tile, 4, 3), 255, np.uint8)])
    if not rows:
        return
    width = max(sum(t.shape[1] for t in r) for r in rows.values())
    lines = []
    for label in sorted(rows):
        name = np.full((tile, 110, 3), 255, np.uint8)
        cv2.putText(name, CANONICAL_LABELS[label], (4, tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        row = np.concatenate([name, *rows[label]], axis=1)
        lines.append(np.pad(row, ((0, 0), (0, width + 110 - row.shape[1]), (0, 0)), constant_values=255))
    header = np.full((24, lines[0].shape[1], 3), 255, np.uint8)
    cv2.putText(header, "each pair: clean | degraded", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.imwrite(str(path), np.concatenate([header, *lines], axis=0))
