"""The ``udcbench`` command line (typer + rich)."""

from __future__ import annotations

import os
import sys

import typer
import typer.core

from udcbench import __version__


def _flag_type(display_type_rich):
    """typer 0.29 shows a flag's type (``--json <bool>``), which reads as if it took a value: flags show none."""

    def display(self, ctx):
        return None if getattr(self, "is_flag", False) else display_type_rich(self, ctx)

    return display


if hasattr(typer.core, "TyperOption") and hasattr(typer.core.TyperOption, "display_type_rich"):
    typer.core.TyperOption.display_type_rich = _flag_type(typer.core.TyperOption.display_type_rich)


def _one_line_usage_error(error) -> None:
    """A bad argument or option (click's usage errors) as one line on stderr, as udcbench's own errors, not
    typer's framed box; exit status 2 as before."""
    if error.__class__.__name__ == "NoArgsIsHelpError":
        return
    ctx = getattr(error, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    message = " ".join(error.format_message().split())
    print(f"error: {message}{where}", file=sys.stderr)


import typer.rich_utils  # noqa: E402  (typer calls rich_utils.rich_format_error at the time of the error)

typer.rich_utils.rich_format_error = _one_line_usage_error

app = typer.Typer(
    name="udcbench",
    help=(
        "Facial expression recognition under under-display cameras: synthesise UDC datasets, "
        "train the baselines and LRDif, and rebuild the LRDif paper's tables.\n\n"
        "Example: udcbench generate && udcbench info data/synthetic"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"udcbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """udcbench: FER under under-display cameras."""


from udcbench.cli import data, photos, results, robustness, synth, train  # noqa: E402

for _module in (data, results, synth, train, robustness, photos):
    _module.register(app)


def _launched_rank() -> int:
    """This process's rank under ``torchrun`` (read without importing torch: ``--help`` stays fast)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def silence_other_ranks() -> None:
    """Under ``torchrun`` rank 0 alone prints: the other ranks' stdout goes nowhere and their logs and progress
    are silenced (their errors still print, marked with the rank)."""
    rank = _launched_rank()
    if rank != 0:
        from udcbench.cli import _common
        from udcbench.progress import stderr

        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
        stderr.quiet = True
        _common.RANK_PREFIX = f"(rank {rank}) "


def main() -> None:
    """The entry point (:func:`silence_other_ranks`); the process group, if any, ends with the command."""
    silence_other_ranks()
    ok = False
    try:
        app()
        ok = True
    except SystemExit as exc:
        ok = exc.code in (0, None)
        raise
    finally:
        if "torch.distributed" in sys.modules:
            from udcbench.engine.runtime import shutdown

            shutdown(wait=ok)  # after an error the other ranks may never reach a last barrier
