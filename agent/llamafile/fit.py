"""The fit rule: will a model run on this box, and which model should it run?

A model needs `Model.ram_gb` of memory. It **fits** a budget when the budget
holds 1.2x that (20 % headroom for the context, the runtime and the OS), is
**tight** when the budget holds the need but not the headroom, and **won't
fit** otherwise. The budget is the VRAM when there is a GPU (offloading every
layer is the fast way), else the RAM; with unified memory (Apple Silicon) it is
the RAM, used by the GPU. A model that does not fit the VRAM but fits the RAM
runs on the CPU (slower, but it runs), and says so.

`recommend` picks per tag the *largest* model that fits (more parameters,
better answers), preferring one that fits on the GPU to a larger one that
would run on the CPU only (ten times slower is not "better"), falls back to
the largest tight one, and explains the choice.
"""

import enum

import attrs

from agent.llamafile.catalog import TAGS, Model
from agent.llamafile.hardware import Hardware

__all__ = ["HEADROOM", "Fit", "Mark", "Pick", "assess", "recommend"]

HEADROOM = 1.2


class Mark(enum.StrEnum):
    """How well a model fits."""

    FIT = "fit"
    TIGHT = "tight"
    NO = "won't fit"


_RANK = {Mark.FIT: 2, Mark.TIGHT: 1, Mark.NO: 0}


@attrs.frozen
class Fit:
    """One model's fit on one box.

    Attributes:
        mark: fit / tight / won't fit.
        where: ``gpu`` or ``cpu``: where it would run.
        need_gb: What the model needs.
        budget_gb: The memory it was measured against.
        reason: One sentence with the numbers.
    """

    mark: Mark
    where: str
    need_gb: float
    budget_gb: float
    reason: str


def _mark(need: float, budget: float) -> Mark:
    if budget >= need * HEADROOM:
        return Mark.FIT
    if budget >= need:
        return Mark.TIGHT
    return Mark.NO


def _sentence(mark: Mark, need: float, budget: float, what: str) -> str:
    padded = need * HEADROOM
    if mark is Mark.FIT:
        return f"needs {need:.1f} GB, x{HEADROOM} = {padded:.1f} GB <= {budget:.1f} GB {what}"
    if mark is Mark.TIGHT:
        return (
            f"needs {need:.1f} GB <= {budget:.1f} GB {what}, but not the x{HEADROOM} "
            f"headroom ({padded:.1f} GB): it may swap or fail under long prompts"
        )
    return f"needs {need:.1f} GB > {budget:.1f} GB {what}"


def assess(model: Model, hardware: Hardware) -> Fit:
    """How `model` fits `hardware` (see the module docstring).

    Args:
        model: A catalog entry.
        hardware: The box's facts.

    Returns:
        The best of running it on the GPU or on the CPU.
    """
    need = model.ram_gb
    options: list[Fit] = []
    if hardware.gpus:
        budget = hardware.ram_gb if hardware.unified else hardware.vram_gb
        what = (
            "unified memory"
            if hardware.unified
            else "VRAM (" + ", ".join(g.name for g in hardware.gpus) + ")"
        )
        mark = _mark(need, budget)
        options.append(Fit(mark, "gpu", need, budget, _sentence(mark, need, budget, what)))
    if not hardware.unified:
        mark = _mark(need, hardware.ram_gb)
        reason = _sentence(mark, need, hardware.ram_gb, "RAM")
        if hardware.gpus and mark is not Mark.NO:
            reason += " (on the CPU: it does not fit the VRAM)"
        options.append(Fit(mark, "cpu", need, hardware.ram_gb, reason))
    # Stable max: the GPU (listed first) wins a tie.
    return max(options, key=lambda fit: _RANK[fit.mark])


def _order(model: Model, fit: Fit) -> tuple[int, bool, float]:
    return (_RANK[fit.mark], fit.where == "gpu", model.ram_gb)


@attrs.frozen
class Pick:
    """`recommend`'s choice for one tag.

    Attributes:
        tag: The tag.
        model: The chosen entry, or None when nothing with this tag fits.
        fit: Its fit.
        why: Why this one (and why not the bigger ones).
    """

    tag: str
    model: Model | None
    fit: Fit | None
    why: str


def recommend(models: list[Model], hardware: Hardware, tags: tuple[str, ...] = TAGS) -> list[Pick]:
    """The best-fitting model per tag.

    Args:
        models: The catalog's entries.
        hardware: The box's facts.
        tags: Which tags to answer for.

    Returns:
        One `Pick` per tag that has at least one entry.
    """
    picks = []
    for tag in tags:
        tagged = [m for m in models if tag in m.tags]
        if not tagged:
            continue
        fits = [(m, assess(m, hardware)) for m in tagged]
        # Fit before tight; on the GPU (fast) before the CPU; then the largest
        # need: the most capable model this box can hold.
        ranked = sorted(fits, key=lambda mf: _order(mf[0], mf[1]), reverse=True)
        model, fit = ranked[0]
        if fit.mark is Mark.NO:
            smallest = min(fits, key=lambda mf: mf[0].ram_gb)
            picks.append(
                Pick(
                    tag,
                    None,
                    None,
                    f"nothing tagged {tag} fits: the smallest, "
                    f"{smallest[0].slug}, {smallest[1].reason}",
                )
            )
            continue
        bigger = [m.slug for m, f in fits if m.ram_gb > model.ram_gb and f.mark is Mark.NO]
        slower = [
            m.slug
            for m, f in fits
            if m.ram_gb > model.ram_gb and f.mark is not Mark.NO and f.where != fit.where
        ]
        verb = "fits" if fit.mark is Mark.FIT else "is tight"
        why = f"{model.slug}: the largest {tag} model that {verb}"
        why += f" on the {fit.where.upper()}; it {fit.reason}"
        if fit.mark is Mark.TIGHT:
            why += "; nothing fits with headroom"
        if slower:
            why += f"; larger ones would run on the CPU only, much slower ({', '.join(slower)})"
        if bigger:
            why += f"; larger ones won't fit ({', '.join(bigger)})"
        picks.append(Pick(tag, model, fit, why))
    return picks
