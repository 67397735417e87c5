"""The model catalog: which llamafiles exist, where to get them, what they need.

Three layers, merged by slug (a later layer replaces an earlier entry):

1. ``catalog.toml`` shipped in this package;
2. the catalog `update-catalog` fetched (``<home>/catalog.toml``): it replaces
   the shipped one whole when its ``revision`` is newer;
3. the user catalog (``<home>/user-catalog.toml``): your own entries, and the
   ones ``import`` adds.

A catalog file is TOML::

    version = 1                      # schema version; we refuse newer ones
    revision = "2026-12-01"          # which edition (ISO date); newer wins
    [[models]]
    slug = "llama-3.2-1b-instruct"
    name = "Llama 3.2 1B Instruct (Q6_K)"
    file = "Llama-3.2-1B-Instruct.Q6_K.llamafile"
    url = "https://..."
    size_bytes = 1_100_000_000
    ram_gb = 2.0                     # memory the model needs at its context length
    context = 8192
    licence = "llama3.2"
    tags = ["chat"]                  # chat, vision, reasoning, embedding, code
    sha256 = "..."                   # optional: 64 hex digits; downloads verify it

Values are `attrs` classes built with one `cattrs` converter (the project's
shape); unknown keys are ignored so a newer catalog still loads, and every
invalid entry is reported by path (``models[3].tags``).
"""

import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import attrs
import cattrs

from agent.llamafile.errors import CatalogError, UnknownModel

__all__ = [
    "SCHEMA_VERSION",
    "TAGS",
    "Catalog",
    "CatalogFile",
    "Model",
    "dump_catalog",
    "load_catalog",
    "parse_catalog",
    "read_catalog_file",
    "shipped_catalog",
    "with_model",
    "without_model",
]

SCHEMA_VERSION = 1
TAGS = ("chat", "vision", "reasoning", "embedding", "code")
MAX_CATALOG_BYTES = 1_000_000

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_slug(_inst: object, _attr: "attrs.Attribute[str]", value: str) -> None:
    if not _SLUG.match(value):
        raise ValueError(f"slug {value!r} must be lower-case letters, digits, '.', '_' or '-'")


def _check_file(_inst: object, _attr: "attrs.Attribute[str]", value: str) -> None:
    if (
        not value
        or "/" in value
        or "\\" in value
        or value in (".", "..")
        or value.endswith(".part")
    ):
        raise ValueError(f"file {value!r} must be a plain file name")


def _check_url(_inst: object, _attr: "attrs.Attribute[str]", value: str) -> None:
    # file:// only for entries `import` wrote (the file is already here).
    if not value.startswith(("https://", "http://", "file://")):
        raise ValueError(f"url {value!r} must start with https:// or http://")


def _check_tags(
    _inst: object, _attr: "attrs.Attribute[tuple[str, ...]]", value: tuple[str, ...]
) -> None:
    unknown = [tag for tag in value if tag not in TAGS]
    if unknown or not value:
        raise ValueError(f"tags {list(value)!r} must be some of {', '.join(TAGS)}")


def _check_sha(_inst: object, _attr: "attrs.Attribute[str | None]", value: str | None) -> None:
    if value is not None and not _SHA256.match(value):
        raise ValueError("sha256 must be 64 lower-case hex digits")


@attrs.frozen
class Model:
    """One catalog entry: a model file and what running it takes.

    Attributes:
        slug: The short name commands take (``download llama-3.2-1b-instruct``).
        name: A human name.
        file: The file name under ``models/``.
        url: Where to download it (http/https).
        size_bytes: The file's size.
        ram_gb: Memory (GiB) the model needs loaded at its default context.
        context: Its default context length in tokens.
        licence: The model's licence.
        tags: What it is good for (see `TAGS`).
        sha256: The file's checksum, if the catalog knows it.
        binary: A llama-server-compatible program to run a plain GGUF with
            (empty: the file is a llamafile and runs itself).
        notes: Free text.
    """

    slug: str = attrs.field(validator=_check_slug)
    name: str
    file: str = attrs.field(validator=_check_file)
    url: str = attrs.field(validator=_check_url)
    size_bytes: int = attrs.field(validator=attrs.validators.gt(0))
    ram_gb: float = attrs.field(validator=attrs.validators.gt(0))
    context: int = attrs.field(validator=attrs.validators.gt(0))
    licence: str
    tags: tuple[str, ...] = attrs.field(validator=_check_tags)
    sha256: str | None = attrs.field(default=None, validator=_check_sha)
    binary: str = ""
    notes: str = ""


@attrs.frozen
class CatalogFile:
    """One catalog document as written.

    Attributes:
        version: The schema version (we read up to `SCHEMA_VERSION`).
        revision: The edition, an ISO date; a newer one replaces an older one.
        models: The entries, in the order the file lists them.
    """

    version: int
    revision: str
    models: tuple[Model, ...] = ()


@attrs.frozen
class Catalog:
    """The merged catalog: every known model by slug, with where each came from.

    Attributes:
        models: Entries in display order.
        sources: slug -> ``shipped``, ``fetched`` or ``user``.
        revision: The revision of the main (shipped or fetched) catalog.
    """

    models: tuple[Model, ...]
    sources: Mapping[str, str]
    revision: str

    def get(self, name: str) -> Model:
        """The entry named `name` (slug, or file name).

        Raises:
            UnknownModel: No such entry.
        """
        for model in self.models:
            if name in (model.slug, model.file):
                return model
        known = ", ".join(m.slug for m in self.models) or "none"
        raise UnknownModel(f"no model {name!r} in the catalog (known: {known})")

    def tagged(self, tag: str | None) -> list[Model]:
        return [m for m in self.models if tag is None or tag in m.tags]


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)

    # TOML integers are fine where a float is wanted (ram_gb = 4); bools are not numbers.
    def _float(value: object, _type: type) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{value!r} is not a number")
        return float(value)

    def _int(value: object, _type: type) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        return value

    def _str(value: object, _type: type) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
        return value

    converter.register_structure_hook(float, _float)
    converter.register_structure_hook(int, _int)
    converter.register_structure_hook(str, _str)
    return converter


_CONVERTER = _make_converter()


def _say(exc: BaseException, type_: type | None) -> str:
    # Our validators' ValueErrors already say what is wrong; keep their words.
    if type(exc) is ValueError and exc.args:
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def parse_catalog(text: str, origin: str) -> CatalogFile:
    """Parse and validate one catalog document.

    Args:
        text: The TOML text.
        origin: Where it came from, for error messages (a path or URL).

    Returns:
        The catalog.

    Raises:
        CatalogError: Not TOML, a newer schema, or an invalid entry (named by path).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{origin} is not valid TOML: {exc}") from None
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CatalogError(f"{origin} has no integer 'version' (the catalog schema version)")
    if version > SCHEMA_VERSION:
        raise CatalogError(
            f"{origin} is catalog schema version {version}; this agent reads up to "
            f"{SCHEMA_VERSION}: upgrade the agent"
        )
    data.setdefault("revision", "0000-00-00")
    try:
        catalog = _CONVERTER.structure(data, CatalogFile)
    except cattrs.ClassValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc, path="catalog", format_exception=_say))
        raise CatalogError(f"{origin} is not a valid catalog: {problems}") from None
    seen: set[str] = set()
    for model in catalog.models:
        if model.slug in seen:
            raise CatalogError(f"{origin} lists {model.slug!r} twice")
        seen.add(model.slug)
    return catalog


def _read(path: Path) -> CatalogFile | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror}") from None
    return parse_catalog(text, str(path))


def shipped_catalog() -> CatalogFile:
    """The catalog that ships in this package."""
    text = resources.files("agent.llamafile").joinpath("catalog.toml").read_text("utf-8")
    return parse_catalog(text, "the shipped catalog")


def load_catalog(fetched: Path, user: Path) -> Catalog:
    """Merge the shipped, fetched and user catalogs (see the module docstring).

    Args:
        fetched: Where `update-catalog` keeps the fetched catalog.
        user: The user catalog.

    Returns:
        The merged catalog.

    Raises:
        CatalogError: One of the files is invalid (named in the message).
    """
    main = shipped_catalog()
    source = "shipped"
    newer = _read(fetched)
    if newer is not None and newer.revision >= main.revision:
        main, source = newer, "fetched"
    by_slug: dict[str, Model] = {}
    sources: dict[str, str] = {}
    for model in main.models:
        by_slug[model.slug] = model
        sources[model.slug] = source
    own = _read(user)
    for model in own.models if own is not None else ():
        by_slug[model.slug] = model
        sources[model.slug] = "user"
    return Catalog(tuple(by_slug.values()), sources, main.revision)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes.
        import json

        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_catalog(catalog: CatalogFile) -> str:
    """The TOML text of `catalog` (what `parse_catalog` reads back)."""
    lines = [f"version = {catalog.version}", f"revision = {_toml_value(catalog.revision)}"]
    for model in catalog.models:
        lines += ["", "[[models]]"]
        for key, value in _CONVERTER.unstructure(model).items():
            if value is None or value == "":
                continue
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def with_model(catalog: CatalogFile | None, model: Model) -> CatalogFile:
    """`catalog` (or a new user catalog) with `model` added or replaced."""
    base = catalog or CatalogFile(SCHEMA_VERSION, "0000-00-00")
    kept: Iterable[Model] = (m for m in base.models if m.slug != model.slug)
    return attrs.evolve(base, models=(*kept, model))


def without_model(catalog: CatalogFile, slug: str) -> CatalogFile:
    return attrs.evolve(catalog, models=tuple(m for m in catalog.models if m.slug != slug))


def read_catalog_file(path: Path) -> CatalogFile | None:
    """One catalog file, or None when it does not exist (raises CatalogError if invalid)."""
    return _read(path)
