"""Export any adapter's data as a HuggingFace ``DatasetDict`` saved with ``save_to_disk``."""

from __future__ import annotations

from pathlib import Path

from udcbench import __version__
from udcbench.datasets.base import DatasetAdapter, class_counts
from udcbench.errors import UdcbenchError
from udcbench.files import overlaps, printable, remove_own_output, write_atomic, write_json
from udcbench.images import encode
from udcbench.labels import __doc__ as LABELS_DOC
from udcbench.progress import track

#: Licence identifiers of the card metadata (the Hub's list); the others are "other", their terms in the text.
LICENSE_IDS = {"synthetic": "apache-2.0"}


def _size_category(n: int) -> str:
    """The Hub's size category of ``n`` examples."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"


#: How to cite the built-in faces (udcbench's own drawing; CITATION.cff).
UDCBENCH_BIBTEX = """@software{udcbench,
  title = {udcbench: facial expression recognition under under-display cameras},
  author = {{The udcbench developers}},
  version = {%s},
  license = {Apache-2.0}
}"""


def published_source(adapter: DatasetAdapter) -> str:
    """What an export names as its source: the dataset and its panel, never a folder of this machine."""
    from udcbench.datasets.base import dataset_names, get_adapter_class

    origin = adapter.origin
    title = get_adapter_class(origin).spec.title if origin in dataset_names() else adapter.spec.title
    recipe = adapter.manifest.get("recipe_name")
    return title + (f", {recipe} panel (udcbench synth)" if recipe else "")


def dataset_card(adapter: DatasetAdapter, counts: dict[str, list[int]]) -> str:
    """README.md for the exported dataset: source, licence, citation, label mapping and counts."""
    spec = adapter.spec
    header = "| class | " + " | ".join(counts) + " |"
    rule = "|---" * (len(counts) + 1) + "|"
    rows = [f"| {i} {name} | " + " | ".join(str(c[i]) for c in counts.values()) + " |"
            for i, name in enumerate(adapter.classes)]
    totals = "| total | " + " | ".join(str(sum(c)) for c in counts.values()) + " |"
    from huggingface_hub import DatasetCard, DatasetCardData

    manifest = adapter.manifest
    recipe = manifest.get("recipe_name")
    origin = adapter.origin
    from udcbench.datasets.base import dataset_names, get_adapter_class

    source = get_adapter_class(origin).spec if origin in dataset_names() else spec  # a copy's terms are its source's
    data = DatasetCardData(
        pretty_name=f"{source.title}" + (f" behind the {recipe} panel" if recipe else "") + " (udcbench export)",
        license=LICENSE_IDS.get(origin, "other"), task_categories=["image-classification"],
        size_categories=[_size_category(sum(sum(c) for c in counts.values()))],
        source_datasets=["original"] if origin == "synthetic" else [f"extended|{origin}"],
        tags=["facial-expression-recognition", "udcbench"] + (["under-display-camera"] if recipe else []),
        **({"udcbench_degradation": {"recipe": recipe, "recipe_sha256": manifest.get("recipe_sha256"),
                                     "seed": manifest.get("seed")}} if recipe else {}),
    )
    degradation = ([
        "## Degradation",
        f"Synthesised by `udcbench synth` with the `{recipe}` recipe (sha256 `{manifest.get('recipe_sha256')}`), "
        f"seed {manifest.get('seed')}; its full recipe and per-image parameters are in `manifest.json` beside "
        "this card.",
        "",
    ] if recipe else [])
    return str(DatasetCard("\n".join([
        "---",
        data.to_yaml(),
        "---",
        f"# {source.title}" + (f" under the {recipe} panel" if recipe else ""),
        "",
        f"Exported by udcbench {__version__} from {published_source(adapter)}.",
        "",
        *degradation,
        "## Source and licence",
        f"- Source: {source.url or 'udcbench'}",
        f"- Licence: {source.licence}",
        "- This export inherits the source's licence terms; redistribute it only where they allow.",
        "",
        "## Columns",
        "`image` (PNG, RGB), `label` (ClassLabel, canonical udcbench order), `id`, `split`, `source`"
        + (", `soft_label` (vote distribution)" if any(r.soft for r in adapter.records()[:1]) else "") + ".",
        "",
        "## Labels",
        "```",
        (LABELS_DOC or "").strip(),
        "```",
        "",
        "## Counts",
        header,
        rule,
        *rows,
        totals,
        "",
        "## Citation",
        "```bibtex",
        source.citation or (UDCBENCH_BIBTEX % __version__ if origin == "synthetic"
                            else "No citation is recorded for this source: cite its authors' paper."),
        "```",
        "",
    ])))


#: Marks a folder as a udcbench export (what --overwrite may replace).
EXPORT_MARKER = "udcbench-export.json"


def export_hf(adapter: DatasetAdapter, out: Path, overwrite: bool = False, progress: bool = True):
    """Write ``adapter``'s splits as a ``datasets.DatasetDict`` to ``out`` and return it."""
    import datasets

    out = Path(out)
    if adapter.root is not None and overlaps(out, adapter.root):
        raise UdcbenchError(f"refusing to export into the source folder: {out} overlaps {adapter.root}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UdcbenchError(f"{out} is not empty; pass --overwrite to replace it (a previous udcbench export only)")
    has_soft = any(r.soft is not None for r in adapter.records())
    features = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(adapter.classes)),
        "id": datasets.Value("string"),
        "split": datasets.Value("string"),
        "source": datasets.Value("string"),
    }
    if has_soft:
        features["soft_label"] = datasets.Sequence(datasets.Value("float32"), length=adapter.num_classes)
    features = datasets.Features(features)
    source = published_source(adapter)
    splits, counts = {}, {}
    for split in adapter.splits():
        records = adapter.records(split)
        counts[split] = class_counts(records, adapter.num_classes)
        columns = {name: [] for name in features}
        for record in track(records, description=f"export {split}") if progress else records:
            columns["image"].append({"bytes": encode(adapter.load_image(record)), "path": None})
            columns["label"].append(record.label)
            columns["id"].append(printable(record.id))
            columns["split"].append(split)
            columns["source"].append(printable(source))
            if has_soft:
                columns["soft_label"].append(list(record.soft))
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    dataset = datasets.DatasetDict(splits)
    if out.exists() and overwrite:
        remove_own_output(out, "export", EXPORT_MARKER)
    dataset.save_to_disk(str(out))
    write_atomic(out / "README.md", dataset_card(adapter, counts))
    write_json(out / EXPORT_MARKER, {"udcbench_version": __version__, "source": source})
    if adapter.manifest:  # the source's identity (origin, condition, recipe and seed): read back with the export
        write_atomic(out / "manifest.json", (adapter.root / "manifest.json").read_bytes())
    return dataset
