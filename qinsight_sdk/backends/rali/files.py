"""RALI's released files, read so that nothing in them can run code.

The official checkpoint is three pickled files beside a CLIP folder: ``ckpt.pt`` (a ``torch.save`` of
``{"state_dict": ...}``), ``pca.pkl`` (a scikit-learn PCA saved with joblib, whose ``mean_`` is the only
value the scorer takes from it) and ``basis.npz`` (the prototypes' initial values, which only size them).
Unpickling runs whatever the file names, so each is read by a reader that refuses anything but data:

- ``ckpt.pt``: the names its pickle imports are listed first (:mod:`pickletools`, nothing executed) and
  must be tensors and an ordered dict; then ``torch.load(weights_only=True)``, torch's own allowlist.
- ``pca.pkl``: joblib's unpickler (it interleaves raw array bytes with the pickle, so the file cannot be
  scanned ahead) with ``find_class`` answering only numpy's array rebuilders, joblib's array wrapper and
  the two PCA classes, which become a plain attribute holder: scikit-learn is never imported. Arrays of
  Python objects are refused (joblib reads them with a nested unpickler). A plain pickle is read by the
  same allowlist without joblib.
- ``basis.npz``: ``np.load(allow_pickle=False)``.

Each refusal is a :class:`~qinsight_sdk.errors.ModelLoadError` naming the file and what it held.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import MissingDependencyError, ModelLoadError

# What a ``torch.save`` of a state dict imports: its container, tensor storages and the tensor rebuilder.
_CHECKPOINT_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    *(("torch", f"{kind}Storage") for kind in ("Float", "Half", "BFloat16", "Double", "Long", "Int", "Bool")),
}
_PCA_CLASSES = {
    ("sklearn.decomposition._pca", "PCA"),
    ("sklearn.decomposition.pca", "PCA"),
    ("sklearn.decomposition._incremental_pca", "IncrementalPCA"),
}
_NUMPY_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    *(
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("scalar", "_reconstruct")
    ),
}
_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_PICKLE_PROTOCOL = pickle.PROTO  # a pickle of protocol 2 or later starts so; anything else is compressed


class FittedPCA:
    """What a pickled PCA holds (``mean_``, ``components_``, ...), as plain attributes, with none of its code."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a PCA's state is a dict, not a {type(state).__name__}")
        self.__dict__.update(state)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The ``state_dict`` of RALI's ``ckpt.pt``, after checking that its pickle imports only tensor types.

    Returns:
        The name -> tensor mapping saved under ``"state_dict"``.
    """
    import torch

    _scan_checkpoint_pickle(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot be read as a weights-only torch checkpoint ({exc})") from None
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: holds no 'state_dict' (RALI's ckpt.pt is {{'state_dict': ...}})")
    return state


def _scan_checkpoint_pickle(path: Path) -> None:
    """Refuse a checkpoint whose pickle imports anything beyond :data:`_CHECKPOINT_GLOBALS` (before loading)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                raise ModelLoadError(f"{path}: not a torch checkpoint (its zip holds no data.pkl)")
            data = archive.read(name)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(
            f"{path}: not a readable torch checkpoint ({exc}); the file may be "
            "half-downloaded, or saved in torch's legacy format (load and save it again)"
        ) from None
    for module, name in _pickle_globals(data, path):
        if (module, name) not in _CHECKPOINT_GLOBALS:
            raise ModelLoadError(
                f"{path}: refused: its pickle imports {module}.{name}, which a checkpoint of "
                "tensors never needs (loading it could run code)"
            )


_STRINGS = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8")
_MEMO_GETS = ("GET", "BINGET", "LONG_BINGET")
_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")


def _pickle_globals(data: bytes, path: Path) -> list[tuple[str, str]]:
    """Every (module, name) a pickle imports, read opcode by opcode without running it.

    ``STACK_GLOBAL`` takes its two names from the stack: they must be the two strings pushed just before
    it (written out, or fetched from the memo), as every pickler writes them; anything else could hide
    what it imports, so it is refused."""
    found: list[tuple[str, str]] = []
    pushed: list[Any] = []  # strings pushed since the last other opcode (None: not a string)
    memo: dict[int, Any] = {}
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in _STRINGS:
                pushed.append(argument)
            elif opcode.name in _MEMO_GETS:
                pushed.append(memo.get(argument))
            elif opcode.name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif opcode.name in _MEMO_PUTS:
                memo[argument] = pushed[-1] if pushed else None
            elif opcode.name == "STACK_GLOBAL":
                names = pushed[-2:]
                if len(names) < 2 or not all(isinstance(name, str) for name in names):
                    raise ModelLoadError(f"{path}: refused: its pickle imports a name it does not spell out")
                found.append((names[0], names[1]))
                pushed = []
            else:
                if opcode.name in ("GLOBAL", "INST"):  # "module name" in the opcode itself
                    module, _, name = str(argument).partition(" ")
                    found.append((module, name))
                pushed = []
    except ValueError as exc:  # pickletools' word for a truncated or corrupt stream
        raise ModelLoadError(f"{path}: its pickle is corrupt ({exc})") from None
    return found


def read_pca_mean(path: Path) -> np.ndarray:
    """``mean_`` of RALI's ``pca.pkl`` (joblib, compressed joblib or a plain pickle), read by an allowlist.

    Returns:
        The PCA's mean as a float32 vector.
    """
    pca = read_pca(path)
    mean = getattr(pca, "mean_", None)
    if not isinstance(mean, np.ndarray) or mean.ndim != 1 or mean.dtype.kind != "f":
        raise ModelLoadError(f"{path}: the PCA has no float vector 'mean_' (found {type(mean).__name__})")
    return mean.astype(np.float32)


def read_pca(path: Path) -> FittedPCA:
    """The PCA object in ``pca.pkl`` as a :class:`FittedPCA`; a refusal is a ``ModelLoadError``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
            handle.seek(0)
            obj = _read_joblib(path, handle) if _needs_joblib(head, handle) else _restricted(handle).load()
    except ModelLoadError:
        raise
    except MissingDependencyError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot be read as a PCA ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, FittedPCA):
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not a PCA")
    return obj


def _needs_joblib(head: bytes, handle: Any) -> bool:
    """Whether the file is joblib's format: compressed (joblib knows each compressor's magic), or a pickle
    naming joblib's array wrapper."""
    if not head.startswith(_PICKLE_PROTOCOL):
        return True
    needle = b"NumpyArrayWrapper"
    found = needle in handle.read()
    handle.seek(0)
    return found


def _allowed(module: str, name: str, extra: set[tuple[str, str]] = frozenset()) -> Any:  # type: ignore[assignment]
    """The object ``find_class`` may return for (module, name): data types only."""
    if (module, name) in _PCA_CLASSES:
        return FittedPCA
    if (module, name) in _NUMPY_GLOBALS | extra:
        return _import(module, name)
    raise pickle.UnpicklingError(
        f"refused: the pickle imports {module}.{name}, which a PCA never needs (loading it could run code)"
    )


def _import(module: str, name: str) -> Any:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):  # numpy 1.x has numpy.core, 2.x numpy._core (with an alias)
        raise pickle.UnpicklingError(f"{module}.{name} does not exist in this numpy") from None


def _restricted(handle: io.BufferedReader) -> pickle.Unpickler:
    class _Allowlisted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return _allowed(module, name)

    return _Allowlisted(handle)


def _read_joblib(path: Path, handle: Any) -> Any:
    """joblib's own reading (decompression, interleaved arrays) with the allowlist as its ``find_class``."""
    try:
        from joblib import numpy_pickle
    except ImportError:
        raise MissingDependencyError(
            f"{path} is a joblib file: reading RALI's PCA needs joblib "
            "(pip install 'qinsight[rali]', or pip install joblib)"
        ) from None
    wrapper = _import(*_JOBLIB_WRAPPER)

    class _Allowlisted(numpy_pickle.NumpyUnpickler):
        dispatch = numpy_pickle.NumpyUnpickler.dispatch.copy()

        def find_class(self, module: str, name: str) -> Any:
            return _allowed(module, name, {_JOBLIB_WRAPPER})

        def load_build(self) -> None:
            # an object array's bytes are a nested pickle (joblib before 1.6 read it without find_class)
            if len(self.stack) > 1 and isinstance(self.stack[-2], wrapper):
                state = self.stack[-1]
                dtype = state.get("dtype") if isinstance(state, dict) else None
                if not isinstance(dtype, np.dtype) or dtype.hasobject:
                    raise pickle.UnpicklingError("refused: an array of Python objects (read by a nested unpickler)")
            numpy_pickle.NumpyUnpickler.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

    # joblib's own reading: it undoes the compression, and arrays come back in this machine's byte order
    with numpy_pickle._validate_fileobject_and_memmap(handle, str(path), None) as (stream, _):
        return _Allowlisted(str(path), stream, True).load()


def read_basis(path: Path) -> dict[str, np.ndarray]:
    """``basis.npz``'s arrays (``vectors``, ``scores``), with pickled object arrays refused."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:  # numpy's refusal of an object array under allow_pickle=False
        raise ModelLoadError(f"{path}: refused: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelLoadError(f"{path}: not a readable .npz file ({exc})") from None
