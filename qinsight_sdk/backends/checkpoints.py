"""Where weights come from: resolving a model id or folder, and refusing a broken folder early.

A missing, half-written or pickle-only checkpoint is reported here with what to do about it, before
transformers gets a chance to fail deep inside with a stack trace.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

from ..errors import ModelLoadError

DEFAULT_MODEL = "ByteDance/Q-Insight"
SCORE_SUBFOLDER = "score_degradation"
COMPARISON_SUBFOLDER = "comparison"
MODEL_ENV_VAR = "QINSIGHT_MODEL"
QWEN25_VL = "qwen2_5_vl"  # the model_type of Q-Insight's checkpoint family
PROFILE_FILE = "qinsight_judge.json"  # a judge's profile (:mod:`qinsight_sdk.judging.profiles`), beside its weights
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DOWNLOAD_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.jinja", "*.model")  # a transformers checkpoint


def default_model() -> str:
    """The model used when none is named: ``$QINSIGHT_MODEL``, else the released Q-Insight weights."""
    return os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL


def default_subfolder(model: str, comparison: bool = False) -> str | None:
    """The released repository keeps each model in a subfolder; other ids and folders need none."""
    if model != DEFAULT_MODEL:
        return None
    return COMPARISON_SUBFOLDER if comparison else SCORE_SUBFOLDER


def resolve_checkpoint(
    model: str,
    subfolder: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | None = None,
    model_type: str | None = QWEN25_VL,
    patterns: tuple[str, ...] = DOWNLOAD_PATTERNS,
) -> Path:
    """A local folder holding a checkpoint, downloading only for a hub id (the files ``patterns`` match).

    It is validated as a safetensors checkpoint of ``model_type``; None leaves the check to the caller
    (a model family's own, :func:`qinsight_sdk.backends.locate`)."""
    if subfolder and (Path(subfolder).is_absolute() or ".." in Path(subfolder).parts):
        raise ModelLoadError(f"subfolder {subfolder!r} must be a relative path inside the model")
    local = Path(model).expanduser()
    if local.exists():
        folder = local / subfolder if subfolder else local
    elif _REPO_ID.match(model) and not model.startswith((".", "/", "~")):
        folder = _download(model, subfolder, revision, local_files_only, cache_dir, patterns)
    else:
        raise ModelLoadError(f"model folder {model!r} does not exist")
    if model_type is not None:
        validate_checkpoint(folder, model_type)
    return folder


def profile_lookup(
    model: str, subfolder: str | None = None, revision: str | None = None, cache_dir: str | None = None
) -> tuple[Path | None, bool]:
    """The checkpoint's own profile file (None: it has none), and whether that could be found out: False
    when the hub could not be asked (offline and not cached, or unreachable), so that the caller can say so
    and check again once the weights are downloaded."""
    local = Path(model).expanduser()
    if local.exists():
        path = (local / subfolder if subfolder else local) / PROFILE_FILE
        return (path if path.is_file() else None), True
    if not _REPO_ID.match(model):
        return None, True
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download(model, PROFILE_FILE, subfolder=subfolder, revision=revision, cache_dir=cache_dir)
        ), True
    except LocalEntryNotFoundError:  # offline and not cached (a subclass of the next in some releases)
        return None, False
    except EntryNotFoundError:  # asked: the repository has no such file
        return None, True
    except Exception:
        return None, False


def checkpoint_file(
    model: str, name: str, subfolder: str | None = None, revision: str | None = None, cache_dir: str | None = None
) -> Path | None:
    """One small file of a checkpoint, found without loading (or downloading) the weights: a local folder's,
    or the one file fetched from the hub (from the cache when offline). None: it has none, or the hub cannot
    be asked; the weights' folder is checked again when they load."""
    local = Path(model).expanduser()
    if local.exists():
        path = (local / subfolder if subfolder else local) / name
        return path if path.is_file() else None
    if not _REPO_ID.match(model):
        return None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model, name, subfolder=subfolder, revision=revision, cache_dir=cache_dir))
    except Exception:  # none in the repository, or no network and not cached: hub errors vary by version
        return None


def _download(
    repo_id: str,
    subfolder: str | None,
    revision: str | None,
    local_files_only: bool,
    cache_dir: str | None,
    patterns: tuple[str, ...],
) -> Path:
    from huggingface_hub import snapshot_download

    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        root = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_patterns=[prefix + p for p in patterns],
        )
    except Exception as exc:  # hub errors differ between huggingface_hub versions
        raise ModelLoadError(_download_advice(repo_id, subfolder, exc, local_files_only)) from None
    folder = Path(root) / subfolder if subfolder else Path(root)
    if not folder.is_dir():
        raise ModelLoadError(f"{repo_id} has no subfolder {subfolder!r}")
    return folder


def _download_advice(repo_id: str, subfolder: str | None, exc: Exception, local_only: bool) -> str:
    offline = local_only or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    include = f" --include '{subfolder}/*'" if subfolder else ""
    where = f"{repo_id}" + (f" (subfolder {subfolder})" if subfolder else "")
    if offline:
        return (
            f"{where} is not in the local Hugging Face cache and downloads are off "
            f"(HF_HUB_OFFLINE or local_files_only). Download it once on a connected machine with "
            f"`hf download {repo_id}{include}`, or pass a local folder as the model."
        )
    return (
        f"could not download {where}: {type(exc).__name__}: {exc}. Check the id and your network, "
        f"or download it with `hf download {repo_id}{include}` and pass the folder as the model."
    )


def validate_checkpoint(folder: Path, model_type: str = QWEN25_VL) -> None:
    """Raise ``ModelLoadError`` unless ``folder`` holds a complete safetensors checkpoint of ``model_type``."""
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {str(folder)!r} does not exist")
    config_path = folder / "config.json"
    if not config_path.is_file():
        nested = sorted(p.parent.name for p in folder.glob("*/config.json"))
        hint = f"; it has model subfolders {nested}: choose one with subfolder=" if nested else ""
        raise ModelLoadError(f"{folder} has no config.json, so it is not a model folder{hint}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(
            f"{config_path} is not valid JSON ({exc}); the folder may be half-written: download it again"
        ) from None
    if config.get("model_type") != model_type:
        raise ModelLoadError(
            f"{folder} holds a {config.get('model_type')!r} model; this judge needs a "
            f"checkpoint with model_type {model_type!r}, such as {DEFAULT_MODEL}"
        )
    _validate_weights(folder)
    _validate_processor_files(folder)


def _validate_weights(folder: Path) -> None:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{index} is unreadable ({exc}); download the model again") from None
        stored: set[str] = set()
        for shard in sorted(set(weight_map.values())):
            stored |= _safetensors_names(folder / shard)
        missing = set(weight_map) - stored
        if missing:
            raise ModelLoadError(
                f"{folder}: {len(missing)} tensors listed in the index are in no shard "
                f"(e.g. {sorted(missing)[0]}); download the model again"
            )
        return
    single = folder / "model.safetensors"
    if single.is_file():
        _safetensors_names(single)
        return
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
        raise ModelLoadError(
            f"{folder} has only pickle weights (.bin/.pt); qinsight loads safetensors "
            "only, because pickle files can run code. Convert them to safetensors first."
        )
    raise ModelLoadError(f"{folder} has no model weights (model.safetensors or a sharded index)")


def _safetensors_names(path: Path) -> set[str]:
    """Tensor names in a safetensors file, after checking that the file is complete."""
    if not path.is_file():
        raise ModelLoadError(f"weight shard {path} is missing; the download is incomplete, run it again")
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(handle.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except OSError as exc:
        raise ModelLoadError(f"weight file {path} cannot be read: {exc.strerror or exc}") from None
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelLoadError(f"weight file {path} is corrupt ({exc}); download it again") from None
    if 8 + header_len + end > size:
        raise ModelLoadError(
            f"weight file {path} is truncated ({size} of {8 + header_len + end} bytes); "
            "it was half-written: download it again"
        )
    return {k for k in header if k != "__metadata__"}


def _validate_processor_files(folder: Path) -> None:
    has_tokenizer = (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )
    missing = [
        name
        for name, ok in (
            ("preprocessor_config.json", (folder / "preprocessor_config.json").is_file()),
            ("tokenizer.json", has_tokenizer),
        )
        if not ok
    ]
    if missing:
        raise ModelLoadError(
            f"{folder} lacks {', '.join(missing)}: the processor cannot be built; download the model again"
        )
