"""Your own photos: what a panel does to a photo (``udcbench degrade``), at the face scale its recipe is
calibrated for, with the face found by OpenCV's bundled detector; and a side-by-side figure large enough to
judge the blur.

The scale: a recipe's PSF, halo and noise are defined at the capture's pixels, where a face spans ``face_px``
pixels (512 for the presets). A photo whose face spans ``w`` pixels is degraded at ``psf_scale = w / face_px``
(dataset pixels per capture pixel, as synth computes it for a dataset's stored faces). ``--face-px`` gives
``w`` where detection should not decide; a photo with no face found is taken as a full capture frame
(``psf_scale`` 1), and the output says which.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from degradations import build_degradation
from degradations.recipe import CAPTURE_SCALE, MAX_PSF_SCALE, Recipe
from udcbench.datasets.base import IMAGE_SUFFIXES, read_image
from udcbench.errors import UdcbenchError, UnreadableImageError
from udcbench.faces import detect_face_haar
from udcbench.files import printable, write_atomic
from udcbench.images import encode

#: The smallest photo side ``degrade`` and ``predict`` take (a face and a panel's blur need room).
MIN_PHOTO_SIDE = 16


def read_photo(path: Path) -> np.ndarray:
    """A photo as H x W x 3 uint8 RGB, refused in one line when a side is under :data:`MIN_PHOTO_SIDE` pixels (a
    1 x 5,000 image gave an OpenCV traceback)."""
    image = read_image(path)
    if min(image.shape[:2]) < MIN_PHOTO_SIDE:
        raise UnreadableImageError(path, f"{image.shape[1]} x {image.shape[0]} pixels: at least {MIN_PHOTO_SIDE} "
                                         "on each side")
    return image


#: The long side of each half of the side-by-side figure (pixels): large enough to judge a blur.
FIGURE_SIDE = 768


def photo_files(paths: list[Path]) -> list[Path]:
    """The image files named, and those directly inside the folders named, sorted; one line when none."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                            and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise UdcbenchError(f"no such file or folder: {path}")
    if not files:
        raise UdcbenchError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, paths))}")
    return files


@dataclass
class Degraded:
    """One degraded photo and how: the scale used and where it came from."""

    image: np.ndarray  # H x W x 3 uint8 RGB, the photo's size
    psf_scale: float
    scale_from: str  # "face 212 px (detected)", "face 300 px (--face-px)" or "no face found: capture scale"
    box: tuple[int, int, int, int] | None  # the face found (x, y, w, h)


def photo_scale(image: np.ndarray, recipe: Recipe, face_px: float | None = None
                ) -> tuple[float, str, tuple[int, int, int, int] | None]:
    """(psf_scale, where it came from, the face box) for ``image`` under ``recipe``."""
    if recipe.kind != "udc":
        return CAPTURE_SCALE, "low light: no PSF, no scale", None
    box = detect_face_haar(image)
    if face_px is not None:
        if not 0 < face_px <= max(image.shape[:2]):
            raise UdcbenchError(f"--face-px must lie in (0, {max(image.shape[:2])}] for this photo, got {face_px}")
        width, source = float(face_px), "--face-px"
    elif box is not None:
        width, source = float(box[2]), "detected"
    else:
        return CAPTURE_SCALE, "no face found: the photo taken as a capture frame (psf_scale 1)", None
    scale = width / recipe.face_px("default")
    if scale > MAX_PSF_SCALE:
        raise UdcbenchError(f"a face of {width:.0f} px is {scale:.1f} x the panel's calibrated "
                            f"{recipe.face_px('default'):.0f} px, over the limit of {MAX_PSF_SCALE}: downscale the "
                            "photo first")
    return scale, f"face {width:.0f} px ({source})", box


#: The memory one photo's degradation may take (``UDCBENCH_DEGRADE_MEMORY_GB``, default 8 GB): about a 40-megapixel
#: photo at the presets' scales; an 81-megapixel one needed more than 12 GB.
DEGRADE_MEMORY_GB = 8.0


def _check_photo_memory(module, psf_scale: float, height: int, width: int, name: str) -> None:
    """Refuse, in one line, a photo whose degradation would take more than the budget."""
    from udcbench.config import env_number
    from udcbench.synthesis import image_bytes

    budget = env_number("UDCBENCH_DEGRADE_MEMORY_GB", DEGRADE_MEMORY_GB, 0.01, 4096, "gigabytes")
    need = image_bytes(module, psf_scale, height, width) / 2**30
    if need > budget:
        raise UdcbenchError(f"{name or 'the photo'} ({width} x {height}) needs about {need:.1f} GB to degrade, over "
                            f"the budget of {budget:g} GB (UDCBENCH_DEGRADE_MEMORY_GB): downscale it first")


def degrade_photo(image: np.ndarray, recipe: Recipe, seed: int = 0, face_px: float | None = None,
                  name: str = "") -> Degraded:
    """``image`` (H x W x 3 uint8 RGB) through ``recipe`` at its face scale; the same (recipe, seed, name) give
    the same pixels."""
    import torch

    from degradations.functional import to_uint8

    scale, source, box = photo_scale(image, recipe, face_px)
    module = build_degradation(recipe)
    _check_photo_memory(module, scale, image.shape[0], image.shape[1], name)
    digest = hashlib.sha256(f"{recipe.digest}:{seed}:{name}".encode(errors="surrogateescape")).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        y = module(x, psf_scale=scale, generator=[generator])
    return Degraded(to_uint8(y)[0].permute(1, 2, 0).numpy(), scale, source, box)


def side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str], path: Path,
                 box: tuple[int, int, int, int] | None = None) -> Path:
    """Two images side by side, each scaled to :data:`FIGURE_SIDE` on its long side, titled; the face box drawn
    on the left one where given. Written as PNG."""
    import cv2

    def fit(image: np.ndarray) -> np.ndarray:
        scale = FIGURE_SIDE / max(image.shape[:2])
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)

    halves = []
    for k, (image, title) in enumerate(zip((left, right), titles)):
        view = image.copy()
        if box is not None and k == 0:
            x, y, w, h = box
            thickness = max(2, max(image.shape[:2]) // 300)
            cv2.rectangle(view, (x, y), (x + w, y + h), (255, 200, 0), thickness)
        view = fit(view)
        header = np.full((36, view.shape[1], 3), 255, np.uint8)
        cv2.putText(header, title[:90], (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        halves.append(np.concatenate([header, view], axis=0))
    height = max(h.shape[0] for h in halves)
    halves = [np.pad(h, ((0, height - h.shape[0]), (0, 0), (0, 0)), constant_values=255) for h in halves]
    gap = np.full((height, 8, 3), 255, np.uint8)
    figure = np.concatenate([halves[0], gap, halves[1]], axis=1)
    return write_atomic(path, encode(figure))


def write_image(image: np.ndarray, path: Path) -> Path:
    """An RGB uint8 image as PNG (or JPEG by suffix), written atomically; any file name."""
    suffix = path.suffix.lower() if path.suffix.lower() in (".png", ".jpg", ".jpeg") else ".png"
    return write_atomic(path.with_suffix(suffix), encode(image, suffix))


#: The file in a ``degrade`` output folder that lists what udcbench wrote there (and may replace).
DEGRADED_LEDGER = ".udcbench-degraded.json"
#: Bytes of a photo's stem kept in an output name (a file name holds 255): longer ones are cut and keep a digest.
STEM_BYTES = 160


def output_stems(files: list[Path]) -> dict[Path, str]:
    """A distinct, short output stem per photo: its stem, cut to :data:`STEM_BYTES` bytes; where two photos share
    one (``a.jpg`` and ``a.png``, or one name in two folders) or it was cut, a digest of the photo's path
    follows, so that no photo's results replace another's."""
    import hashlib

    def cut(stem: str) -> str:
        return stem.encode()[:STEM_BYTES].decode(errors="ignore")

    counts: dict[str, int] = {}
    for path in files:
        counts[cut(path.stem)] = counts.get(cut(path.stem), 0) + 1
    stems = {}
    for path in files:
        stem = cut(path.stem)
        if counts[stem] > 1 or stem != path.stem:
            stem += "-" + hashlib.sha256(str(path.resolve()).encode(errors="surrogateescape")).hexdigest()[:8]
        stems[path] = stem
    return stems


def degrade_files(files: list[Path], recipe: Recipe, out: Path, seed: int = 0, face_px: float | None = None,
                  overwrite: bool = False) -> list[dict]:
    """``degrade`` on each photo: ``out/<stem>-<recipe>.png`` (the photo's size) and ``out/<stem>-<recipe>-
    compare.png``; one row per photo (what was written and how). A file there that udcbench did not write (not in
    the folder's :data:`DEGRADED_LEDGER`) is refused in one line before anything is written, unless
    ``overwrite``."""
    from udcbench.files import read_json, write_json

    stems = output_stems(files)
    ledger_path = out / DEGRADED_LEDGER
    ledger = read_json(ledger_path)
    ours = set(ledger.get("written", [])) if isinstance(ledger, dict) else set()
    names = {path: (f"{stems[path]}-{recipe.name}.png", f"{stems[path]}-{recipe.name}-compare.png") for path in files}
    foreign = [n for pair in names.values() for n in pair if (out / n).exists() and n not in ours]
    if foreign and not overwrite:
        raise UdcbenchError(f"{out / foreign[0]} exists and udcbench did not write it: pass --overwrite to replace "
                            "it, or another --out")
    rows = []
    for path in files:
        image = read_photo(path)
        result = degrade_photo(image, recipe, seed, face_px, name=path.name)
        degraded = write_image(result.image, out / names[path][0])
        figure = side_by_side(image, result.image, (f"{path.name} (clean)", f"{recipe.name}: {result.scale_from}, "
                                                    f"psf_scale {result.psf_scale:.3f}, seed {seed}"),
                              out / names[path][1], result.box)
        ours |= set(names[path])
        write_json(ledger_path, {"written": sorted(ours)})
        rows.append({"photo": printable(str(path)), "degraded": printable(str(degraded)),
                     "figure": printable(str(figure)), "psf_scale": result.psf_scale, "scale_from": result.scale_from,
                     "face_box": list(result.box) if result.box else None, "size": list(image.shape[1::-1])})
    return rows
