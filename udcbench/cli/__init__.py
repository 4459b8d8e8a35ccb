"""The ``udcbench`` command line (typer + rich)."""

from __future__ import annotations

import typer

from udcbench import __version__

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


from udcbench.cli import data, results, synth, train  # noqa: E402

for _module in (data, results, synth, train):
    _module.register(app)


def main() -> None:
    app()
