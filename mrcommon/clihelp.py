"""`--help` in panels for both programs, in plain text.

Typer groups options under `rich_help_panel` only when it renders help with
rich; both programs print plain help (`rich_markup_mode=None`: it is fast,
and reads the same in a terminal, a pipe and docs/cli.md). `PanelCommand`
groups the plain help by the same panel names, in the order they first
appear. Unlike the rest of mrcommon this module imports Typer: only the two
command lines use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer.core

if TYPE_CHECKING:
    from typer._click import Context, HelpFormatter

__all__ = ["PANEL_ORDER", "PanelCommand", "ordered_panels"]

_OTHER = "Other options"

# Panels in this order on both programs; a panel not listed comes after them.
PANEL_ORDER = (
    "Listening",
    "Relay connection",
    "Workers",
    "Backend",
    "Limits and timeouts",
    "Keys and admin",
    "Metrics",
    "Logging",
    "Configuration",
)


def ordered_panels(names: list[str]) -> list[str]:
    """`names` (in first-appearance order) sorted by PANEL_ORDER, "Other options" last."""
    rank = {name: i for i, name in enumerate(PANEL_ORDER)}
    return sorted(names, key=lambda n: (n == _OTHER, rank.get(n, len(PANEL_ORDER)), names.index(n)))


class PanelCommand(typer.core.TyperCommand):
    """A Typer command whose plain `--help` lists options panel by panel."""

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or param.param_type_name != "option":
                continue
            panel = getattr(param, "rich_help_panel", None) or _OTHER
            panels.setdefault(panel, []).append(record)
        for name in ordered_panels(list(panels)):  # --help and the like go last
            with formatter.section(name):
                formatter.write_dl(panels[name])
