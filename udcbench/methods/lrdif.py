"""LRDif and its Table 5 variants, and its low-light sibling LLDif, as registered methods: their recipes, the two
stages (stage 2 starts from the stage-1 run), the landmark network's pre-training, and the step counts of
Figure 6."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from udcbench.config import TrainConfig
from udcbench.errors import UdcbenchError
from udcbench.methods.base import PrepareContext, Sweep, prepare_landmark_net, register_method

if TYPE_CHECKING:
    from baselines.base import FERModel

LRDIF_PAPER = {"input_size": 112, "optimizer": "adam", "lr": 3.5e-4, "weight_decay": 1e-4, "schedule": "constant",
               "epochs": 100, "batch_size": 64, "amp": True, "affine": False, "erasing": 0.0}
LRDIF_ARGS = {"steps": 4, "z_dim": 256, "parameterization": "x0", "kl_temperature": 1.0, "encoder": "scratch",
              "clip_model": "ViT-B-32", "clip_weights": None, "landmark_epochs": 3, "landmark_source": "auto",
              "from_run": None, "width": 64, "blocks": [1, 1, 1], "token_dim": 128, "tokens_per_scale": 2, "depth": 2,
              "window": None, "label_dropout": 0.5, "layout": "sequence", "head": "udcformer"}
#: The paper's model, LRDif's ``paper`` preset: CLIP's image and text towers as E_I and E_L (``--clip FILE``), the
#: DT blocks U-Net style, no label dropout. The shared budgets keep the fair model of ``LRDIF_ARGS`` (the
#: baselines' trunk, learned label embeddings), which they compare with the baselines.
LRDIF_PAPER_MODEL = {"encoder": "clip", "layout": "unet", "label_dropout": 0.0}
#: The CLIP checkpoint the paper's model needs (the paper names neither the model nor its weights).
CLIP_FILE_HINT = ("an open_clip checkpoint of ViT-B-32, e.g. open_clip_pytorch_model.bin of "
                  "laion/CLIP-ViT-B-32-laion2B-s34B-b79K (OpenAI's weights: --set method_args.clip_model="
                  "ViT-B-32-quickgelu)")
#: The shared cpu budget (the baselines' recipe, label smoothing as the control's), its epochs split over the two
#: stages: 3 + 12 LRDif epochs cost 1.51x the control's 15 by training throughput (bf16, 64 px, docs/lrdif.md).
#: The gradient norm is clipped at 5, as EAC's: at the shared peak lr (SGD 0.1) stage 1 of seed 2 on
#: UDC-FERPlus diverged (the norm, 1-6 in steady training, grew from 8 to 7e4 in 15 steps through the token
#: transformer's attention and the head, and the loss became nan at step 143); clipped, the same seed trains.
LRDIF_CPU_CLIP = 5.0
LRDIF_CPU_STAGE1 = {"label_smoothing": 0.1, "epochs": 3, "grad_clip": LRDIF_CPU_CLIP}
LRDIF_CPU_STAGE2 = {"label_smoothing": 0.1, "epochs": 12, "grad_clip": LRDIF_CPU_CLIP}
#: Where the ``paper`` preset (the paper's model) is known to differ from the paper, which gives no code.
LRDIF_DEPARTURES = (
    "the paper names neither its CLIP model nor its weights: ViT-B-32 by default (method_args.clip_model, --clip FILE)",
    "the DT and DIL blocks run on the ResNet-18 trunk's layer2-4 maps (projected to 64 channels); the paper does not "
    "say what feeds them",
    "the DIL blocks' cross-attention window is the whole map; the paper does not give its window size",
    "the denoiser predicts Z_0 (x0-parameterisation), projected onto the unit sphere, where the paper's Eq. 16 "
    "predicts the noise (method_args.parameterization=eps follows the paper)",
    "Z is scaled to unit root-mean-square coordinates before the diffusion (the paper does not scale it)",
    "each scale's fused map is pooled to 2 x 2 tokens (method_args.tokens_per_scale) and a CLS token is read by the "
    "transformer blocks; the paper does not say how its tokens are formed or read",
    "each stage trains for the budget's epochs (100 at the paper budget); the paper gives 100 epochs without saying "
    "whether per stage or in all",
    "the landmark network is pre-trained on the training split's 68 landmarks (the dataset's own or dlib's), where "
    "the paper uses a frozen, separately trained facial landmark detector (MobileFaceNet in POSTER++)",
    "method_args.head=bypass (not the default) classifies the trunk's pooled feature plus the UDCformer's output "
    "through a zero-initialised projection, instead of the UDCformer's output alone (the paper)",
)
#: The arguments stage 1 never reads (its model has the diffusion, untrained and unused): overriding them, as
#: Figure 6's sweep does, reuses the shared stage 1.
LRDIF_STAGE2_ARGS = ("steps", "parameterization", "kl_temperature")
#: The quick budget is the shared quick recipe (48 px, one epoch per stage, from the face pre-training's trunk as
#: every method: ``udcbench.pretrain``); 32 px and 12-20 steps per stage from scratch left LRDif at chance
#: (docs/results.md).
#: One epoch of landmark pre-training on the quick budget: three were its largest item (a third of LRDif's
#: share of the plan) on the ResNet-18 trunk.
LRDIF_QUICK_ARGS = {"landmark_epochs": 1}


def _check_clip(config: TrainConfig) -> None:
    """CLIP encoders need their local file: refused with the file and the flag named."""
    a = config.method_args
    if a["encoder"] == "clip" and not a["clip_weights"]:
        raise UdcbenchError(f"{config.method} at the {config.preset} preset encodes with CLIP and needs "
                            f"{CLIP_FILE_HINT}: pass --clip FILE (nothing is downloaded), or train the fair "
                            "model on the shared trunk (--budget cpu, or --set method_args.encoder=scratch)")


def _lrdif_builder(variant: str, lldif: bool = False) -> Callable[[int, TrainConfig], FERModel]:
    def build(num_classes: int, config: TrainConfig) -> FERModel:
        from lrdif.lldif import LLDif
        from lrdif.model import LRDif

        a = config.method_args
        _check_clip(config)
        encoder = a["encoder"] if a["encoder"] != "auto" else ("clip" if a["clip_weights"] else "scratch")
        model, extra = (LLDif, {"captions": bool(a["captions"])}) if lldif else (LRDif, {})
        try:
            return model(num_classes, variant=variant, steps=int(a["steps"]), z_dim=int(a["z_dim"]),
                         width=int(a["width"]), parameterization=a["parameterization"],
                         kl_temperature=float(a["kl_temperature"]),
                         encoder=encoder, clip_model=a["clip_model"], clip_weights=a["clip_weights"],
                         mean=config.mean, std=config.std, blocks=a["blocks"], token_dim=int(a["token_dim"]),
                         tokens_per_scale=int(a["tokens_per_scale"]), depth=int(a["depth"]),
                         window=None if a["window"] is None else int(a["window"]),
                         label_dropout=float(a["label_dropout"]), label_smoothing=config.label_smoothing,
                         layout=a.get("layout", "sequence"), head=a.get("head", "udcformer"), **extra)
        except FileNotFoundError as exc:
            raise UdcbenchError(str(exc)) from None

    return build


def model_description(args: dict) -> str:
    """Which LRDif a run trains, in the words its record and the tables use."""
    clip = args["encoder"] == "clip" or (args["encoder"] == "auto" and args.get("clip_weights"))
    encoders = f"CLIP {args['clip_model']} encoders" if clip else "the shared trunk's E_I, learned E_L"
    layout = "DT blocks U-Net style" if args.get("layout") == "unet" else "DT blocks in sequence"
    kind = "the paper's model" if clip and args.get("layout") == "unet" else "the fair model"
    head = ("classifier on the trunk's pooled feature plus the UDCformer (bypass variant)"
            if args.get("head") == "bypass" else "classifier on the UDCformer's output")
    return f"{kind}: {encoders}, {layout}, label dropout {float(args['label_dropout']):g}, {head}"


def _lrdif_prepare(model: FERModel, context: PrepareContext) -> None:
    """Stage 1: pre-train (then freeze) the landmark network on the dataset's landmarks.
    Stage 2: start from the stage-1 run (``method_args.from_run``, handed over as ``context.stage1_run``) and
    freeze FPEN_S1 and its encoders."""
    config = context.config
    args = config.method_args
    context.notes["model"] = model_description(args)
    if args.get("clip_weights") and model.encoders.kind == "clip":
        from baselines.backbone import sha256_file

        context.notes["clip_weights"] = {"file": str(args["clip_weights"]), "sha256": sha256_file(args["clip_weights"])}
    if model.variant.stage == 2:
        source = context.stage1_run
        if source is None:
            raise UdcbenchError("LRDif stage 2 needs its stage-1 run: --from RUN (or let udcbench train run both)")
        # Stage 1's last epoch, not its best: the oracle's validation accuracy (label in) reaches 100 % in its
        # first epoch, so selecting on it would hand over the least trained model (docs/lrdif.md).
        path = source / "last.pt"
        if not path.is_file():
            raise UdcbenchError(f"no stage-1 checkpoint at {path}")
        from udcbench.checkpoints import load_checkpoint

        model.load_stage1(load_checkpoint(path)["model"])
        model.train()  # freezes FPEN_S1, the encoders and the landmark network
        context.notes["stage1_run"] = str(source.resolve())
        return
    prepare_landmark_net(model.landmarks, context, epochs=int(args["landmark_epochs"]),
                         source=args["landmark_source"])


for _variant, _title in (("s1", "LRDif stage 1 (oracle: label in)"), ("s2-v3", "LRDif"),
                         ("s2-v1", "LRDif S2-V1 (no DM, L_ce)"), ("s2-v2", "LRDif S2-V2 (DM, L_ce)"),
                         ("s2-v4", "LRDif S2-V4 (DM, L_total, no inserted noise)")):
    register_method(
        "lrdif" if _variant == "s2-v3" else f"lrdif-{_variant}", title=_title,
        backbone="ResNet-18 + UDCformer + diffusion",
        paper="Wang, Zhang, Sankaranarayana, LRDif: Diffusion Models for UDC Emotion Recognition, arXiv 2402.00250",
        description=f"LRDif variant {_variant} (Table 5).", paper_recipe=LRDIF_PAPER,
        cpu_recipe=LRDIF_CPU_STAGE1 if _variant == "s1" else LRDIF_CPU_STAGE2,
        method_args={**LRDIF_ARGS, **LRDIF_PAPER_MODEL}, cpu_method_args={k: LRDIF_ARGS[k] for k in LRDIF_PAPER_MODEL},
        quick_method_args=LRDIF_QUICK_ARGS, prepare=_lrdif_prepare,
        departures=LRDIF_DEPARTURES, file_args=("clip_weights",), check=_check_clip,
        stage1=None if _variant == "s1" else "lrdif-s1", oracle=_variant == "s1",
        stage2_args=() if _variant == "s1" else LRDIF_STAGE2_ARGS,
        ablation_only=_variant in ("s2-v1", "s2-v2", "s2-v4"),  # Table 5's rows besides the paper's model
        # the quick study is the paper's main comparison: Table 5's variants are in the cpu and paper studies
        in_quick_study=_variant not in ("s2-v1", "s2-v2", "s2-v4"),
        # Figure 6 (accuracy against the diffusion steps T) and Figures 4/5 (t-SNE): the paper's model only.
        sweep=Sweep("steps", "T", "6") if _variant == "s2-v3" else None, tsne=_variant == "s2-v3",
    )(_lrdif_builder(_variant))


#: LLDif: LRDif's arguments, its DLNet's cross-window attention (4 x 4 windows) and the caption switch.
LLDIF_ARGS = {**LRDIF_ARGS, "window": 4, "captions": True}
LLDIF_CITATION = ("Wang, Zhang, Sankaranarayana, LLDif: Diffusion Models for Low-light Emotion Recognition, "
                  "arXiv 2408.04235")

for _variant, _title in (("s1", "LLDif stage 1 (oracle: label and caption in)"), ("s2-v3", "LLDif")):
    register_method(
        "lldif" if _variant == "s2-v3" else "lldif-s1", title=_title,
        backbone="ResNet-18 + LLformer + diffusion", paper=LLDIF_CITATION,
        description=f"LLDif {'stage 1' if _variant == 's1' else 'stage 2'}: the LA-CLIP prior (image, caption, "
                    "label), LRDif's machinery otherwise.",
        # the paper's hyper-parameters are not at hand: LRDif's recipe at every preset (docs/lrdif.md)
        paper_recipe=LRDIF_PAPER, cpu_recipe=LRDIF_CPU_STAGE1 if _variant == "s1" else LRDIF_CPU_STAGE2,
        method_args=dict(LLDIF_ARGS), quick_method_args=LRDIF_QUICK_ARGS, prepare=_lrdif_prepare,
        file_args=("clip_weights",), check=_check_clip,
        stage1=None if _variant == "s1" else "lldif-s1", oracle=_variant == "s1",
        stage2_args=() if _variant == "s1" else LRDIF_STAGE2_ARGS,
        in_quick_study=False, study_kinds=("lowlight",),  # the low-light sibling: low-light studies only
    )(_lrdif_builder(_variant, lldif=True))
