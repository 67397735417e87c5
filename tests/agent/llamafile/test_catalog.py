"""The catalog: the shipped file validates; bad catalogs are refused by path; update-catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agent.llamafile.catalog import (
    SCHEMA_VERSION,
    dump_catalog,
    load_catalog,
    parse_catalog,
    shipped_catalog,
)
from agent.llamafile.errors import CatalogError, UnknownModel
from tests.agent.llamafile.conftest import catalog_toml, entry

if TYPE_CHECKING:
    from pathlib import Path

    from tests.agent.llamafile.conftest import Cli
    from tests.agent.llamafile.fileserver import FileServer


def test_shipped_catalog_is_valid_and_covers_the_tags() -> None:
    shipped = shipped_catalog()
    assert shipped.version == SCHEMA_VERSION
    assert len(shipped.models) >= 5
    tags = {tag for model in shipped.models for tag in model.tags}
    assert {"chat", "vision", "embedding", "code", "reasoning"} <= tags
    for model in shipped.models:
        assert model.url.startswith("https://")
        assert model.url.endswith(model.file)


def test_round_trip() -> None:
    text = catalog_toml([entry("a", "http://x/a", b"a", tags=["chat", "code"])])
    parsed = parse_catalog(text, "t")
    assert parse_catalog(dump_catalog(parsed), "t") == parsed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tags": ["chat", "poetry"]}, "tags ['chat', 'poetry'] must be some of chat"),
        ({"sha256": "abc"}, "sha256 must be 64"),
        ({"url": "ftp://x/a"}, "must start with https://"),
        ({"file": "../../etc/passwd"}, "plain file name"),
        ({"slug": "Has Space"}, "slug 'Has Space'"),
        ({"size_bytes": "big"}, "models[0].size_bytes"),
        ({"ram_gb": -1}, "'ram_gb' must be > 0: -1"),
    ],
)
def test_invalid_entries_are_named(change: dict[str, object], message: str) -> None:
    text = catalog_toml([{**entry("a", "http://x/a", b"a"), **change}])
    with pytest.raises(CatalogError, match="not a valid catalog") as caught:
        parse_catalog(text, "cat.toml")
    assert message in caught.value.message


def test_newer_schema_and_duplicates_are_refused() -> None:
    with pytest.raises(CatalogError, match="upgrade the agent"):
        parse_catalog(catalog_toml([], version=SCHEMA_VERSION + 1), "c")
    twice = catalog_toml([entry("a", "http://x/a", b"a"), entry("a", "http://x/b", b"b")])
    with pytest.raises(CatalogError, match="lists 'a' twice"):
        parse_catalog(twice, "c")
    with pytest.raises(CatalogError, match="not valid TOML"):
        parse_catalog("version = = 1", "c")


def test_unknown_keys_are_ignored() -> None:
    text = catalog_toml([entry("a", "http://x/a", b"a", quantization="Q4_K_M")])
    assert parse_catalog(text.replace("version = 1", "version = 1\nmirror = 'x'"), "c").models


def test_layers_merge_by_slug(tmp_path: Path) -> None:
    fetched, user = tmp_path / "catalog.toml", tmp_path / "user-catalog.toml"
    fetched.write_text(catalog_toml([entry("a", "http://x/a", b"a")]))
    user.write_text(
        catalog_toml([entry("a", "http://mine/a", b"a"), entry("b", "http://x/b", b"b")])
    )
    merged = load_catalog(fetched, user)
    assert [m.slug for m in merged.models] == ["a", "b"]
    assert merged.get("a").url == "http://mine/a"
    assert merged.sources == {"a": "user", "b": "user"}
    # An older fetched catalog does not replace the shipped one.
    fetched.write_text(catalog_toml([entry("a", "http://x/a", b"a")], revision="2000-01-01"))
    user.unlink()
    assert load_catalog(fetched, user).models == shipped_catalog().models
    with pytest.raises(UnknownModel, match="no model 'zzz'"):
        load_catalog(fetched, user).get("zzz")


def test_update_catalog_fetches_validates_and_keeps_the_old_one(
    cli: Cli, files: FileServer, home: Path
) -> None:
    good = catalog_toml([entry("m", f"{files.url}/m", b"m")])
    files.files["/good.toml"] = good.encode()
    files.files["/page.html"] = b"<!doctype html><html>models!</html>"
    files.content_type["/page.html"] = "text/html"
    files.files["/bad.toml"] = catalog_toml(
        [entry("m", f"{files.url}/m", b"m", tags=["x"])]
    ).encode()
    files.files["/future.toml"] = catalog_toml([], version=99).encode()
    ok = cli("update-catalog", "--url", f"{files.url}/good.toml", "--json")
    assert ok.code == 0, ok.stderr
    assert ok.json()["models"] == 1
    assert (home / "catalog.toml").read_text() == good
    for path, message in [
        ("/page.html", "is an HTML page, not a catalog"),
        ("/bad.toml", "tags ['x'] must be some of chat, vision"),
        ("/future.toml", "upgrade the agent"),
        ("/missing.toml", "answered HTTP 404"),
    ]:
        result = cli("update-catalog", "--url", f"{files.url}{path}")
        assert result.code == 1, path
        assert message in result.stderr
        assert "kept the current catalog" in result.stderr
        assert "Traceback" not in result.stderr
        assert (home / "catalog.toml").read_text() == good  # untouched
    listed = cli("list", "--json").json()
    assert [m["slug"] for m in listed["models"]] == ["m"]
