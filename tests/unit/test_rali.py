"""RALI: its pickled files read by allowlists, its forward equal to the official formulas, and the judge
it makes (fast scores only, batched, per-item errors), on tiny checkpoints in the released layout."""

import collections
import json
import logging
import os
import pickle
import re
import struct
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr
from sklearn.decomposition import PCA, IncrementalPCA

from qinsight_sdk import QualityJudge
from qinsight_sdk import backends as backends_module
from qinsight_sdk.backends import FAMILIES, expected_family, family_of
from qinsight_sdk.backends.rali import files as rali_files
from qinsight_sdk.backends.rali.backend import NativeSize, RaliBackend
from qinsight_sdk.backends.rali.files import _pickle_globals, read_basis, read_checkpoint, read_pca, read_pca_mean
from qinsight_sdk.backends.rali.model import PrototypeDistribution, RaliScorer, _check_sizes, _first_line, load_scorer
from qinsight_sdk.backends.rali.tiny import brightness_images, build_tiny_rali
from qinsight_sdk.errors import ImageInputError, MissingDependencyError, ModelLoadError, UsageError
from qinsight_sdk.io.images import ImageBounds


@pytest.fixture(scope="module")
def rali_folder(tmp_path_factory):
    return build_tiny_rali(tmp_path_factory.mktemp("rali") / "RALI", seed=3)


@pytest.fixture(scope="module")
def trained_rali(tmp_path_factory):
    return build_tiny_rali(tmp_path_factory.mktemp("rali-trained") / "RALI", trained=True)


@pytest.fixture(scope="module")
def rali(rali_folder):
    return QualityJudge.from_pretrained(rali_folder, device="cpu")


class RunsCommand:
    """Unpickling this runs a shell command that creates ``marker``: what a hostile file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# -- the files, read safely ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [PCA, IncrementalPCA])
@pytest.mark.parametrize("form", ["joblib", "joblib-zlib", "joblib-gzip", "pickle"])
def test_a_real_pca_loads_in_each_form_without_scikit_learn_code(tmp_path, kind, form):
    fitted = kind(n_components=3).fit(np.random.default_rng(0).normal(size=(40, 6)))
    path = tmp_path / "pca.pkl"
    if form == "pickle":
        path.write_bytes(pickle.dumps(fitted))
    else:
        joblib.dump(fitted, path, compress={"joblib": 0, "joblib-zlib": 3, "joblib-gzip": ("gzip", 3)}[form])
    loaded = read_pca(path)
    assert type(loaded).__module__.startswith("qinsight_sdk")  # a plain holder, not scikit-learn's class
    np.testing.assert_array_equal(loaded.mean_, fitted.mean_)
    np.testing.assert_array_equal(loaded.components_, fitted.components_)
    assert read_pca_mean(path).dtype == np.float32


@pytest.mark.parametrize("form", ["joblib", "joblib-zlib", "pickle", "inside-a-dict"])
def test_a_pca_file_that_would_run_a_command_is_refused_and_nothing_runs(tmp_path, form):
    marker, path = tmp_path / "ran", tmp_path / "pca.pkl"
    payload = RunsCommand(marker)
    if form == "pickle":
        path.write_bytes(pickle.dumps(payload))
    elif form == "inside-a-dict":
        joblib.dump({"mean_": np.zeros(3), "hook": payload}, path)
    else:
        joblib.dump(payload, path, compress=3 if form == "joblib-zlib" else 0)
    with pytest.raises(ModelLoadError, match="system.*loading it could run code"):
        read_pca(path)
    assert not marker.exists()


def test_an_array_of_python_objects_in_a_joblib_file_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "pca.pkl"
    joblib.dump(np.array([RunsCommand(marker)], dtype=object), path)
    with pytest.raises(
        ModelLoadError,
        match=r"cannot be read as a PCA \(UnpicklingError: refused: an array of Python "
        r"objects \(read by a nested unpickler\)\)$",
    ):
        read_pca(path)
    assert not marker.exists()


def test_a_pca_file_holding_something_else_or_no_mean_is_refused(tmp_path):
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ModelLoadError, match="holds a list, not a PCA"):
        read_pca(tmp_path / "list.pkl")
    fitted = PCA(2).fit(np.eye(4))
    del fitted.mean_
    joblib.dump(fitted, tmp_path / "nomean.pkl")
    with pytest.raises(ModelLoadError, match="no float vector 'mean_'"):
        read_pca_mean(tmp_path / "nomean.pkl")
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps(PCA(2).fit(np.eye(4)))[:40])
    with pytest.raises(ModelLoadError, match="cannot be read as a PCA"):
        read_pca(tmp_path / "cut.pkl")


def test_a_checkpoint_whose_pickle_imports_more_than_tensors_is_refused_before_loading(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": RunsCommand(marker)}, path)
    with pytest.raises(ModelLoadError, match="imports posix.system|imports nt.system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_a_checkpoint_of_tensors_loads_and_broken_ones_say_why(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}}, path)
    assert torch.equal(read_checkpoint(path)["w"], torch.arange(3.0))
    torch.save({"weights": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ModelLoadError, match="holds no 'state_dict'"):
        read_checkpoint(path)
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ModelLoadError, match="not a readable torch checkpoint"):
        read_checkpoint(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/other.txt", "x")
    with pytest.raises(ModelLoadError, match="holds no data.pkl"):
        read_checkpoint(path)


def globals_of(data):
    return _pickle_globals(data, Path("ckpt.pt"))


def _unicode(opcode, text):
    body = text.encode()
    return {
        "SHORT_BINUNICODE": b"\x8c" + bytes([len(body)]),
        "BINUNICODE": b"X" + struct.pack("<I", len(body)),
        "BINUNICODE8": b"\x8d" + struct.pack("<Q", len(body)),
    }[opcode] + body


@pytest.mark.parametrize("opcode", ["SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"])
def test_the_scanner_reads_stack_global_names_however_their_strings_are_written(opcode):
    data = b"\x80\x04" + _unicode(opcode, "posix") + _unicode(opcode, "system") + b"\x93."
    assert globals_of(data) == [("posix", "system")]
    assert globals_of(b"\x80\x04Vposix\nVsystem\n\x93.") == [("posix", "system")]  # UNICODE, protocol 0 style


def test_the_scanner_follows_names_fetched_from_the_memo_and_old_opcodes():
    # protocol 4 memoizes both names; a later STACK_GLOBAL may fetch them with BINGET
    data = (
        b"\x80\x04"
        + _unicode("SHORT_BINUNICODE", "posix")
        + b"\x94"
        + _unicode("SHORT_BINUNICODE", "system")
        + b"\x94\x93"
        + b"0"
        + b"h\x00h\x01\x93."
    )
    assert globals_of(data) == [("posix", "system"), ("posix", "system")]
    put = (
        b"\x80\x02"
        + _unicode("BINUNICODE", "os")
        + b"q\x05"
        + _unicode("BINUNICODE", "system")
        + b"q\x06"
        + b"0"
        + b"h\x05h\x06\x93."
    )
    assert globals_of(put) == [("os", "system")]
    assert globals_of(b"(S'echo'\nios\nsystem\n.") == [("os", "system")]  # INST names it inline
    assert globals_of(b"cos\nsystem\n.") == [("os", "system")]  # GLOBAL
    assert globals_of(pickle.dumps(collections.OrderedDict(a=1), protocol=4)) == [("collections", "OrderedDict")]


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x04"
        + _unicode("SHORT_BINUNICODE", "posix")
        + b"K\x01"
        + _unicode("SHORT_BINUNICODE", "system")
        + b"\x93.",
        b"\x80\x04" + _unicode("SHORT_BINUNICODE", "system") + b"\x93.",
        b"\x80\x04h\x00h\x01\x93.",
    ],
    ids=["something-between", "one-name", "names-not-in-the-memo"],
)
def test_a_stack_global_whose_names_are_not_spelled_out_is_refused(data):
    with pytest.raises(ModelLoadError, match="^ckpt.pt: refused: its pickle imports a name it does not spell out$"):
        globals_of(data)


def test_a_corrupt_pickle_is_said_to_be_corrupt():
    with pytest.raises(ModelLoadError, match="^ckpt.pt: its pickle is corrupt"):
        globals_of(b"\x80\x04\x8c\x05pos")


def test_weights_only_refuses_a_hostile_checkpoint_even_past_the_scan(tmp_path, monkeypatch):
    """Two locks: with the scan switched off, torch's weights-only unpickler still refuses the payload."""
    marker, path = tmp_path / "ran", tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": RunsCommand(marker)}, path)
    monkeypatch.setattr(rali_files, "_scan_checkpoint_pickle", lambda path: None)
    with pytest.raises(ModelLoadError, match="cannot be read as a weights-only torch checkpoint"):
        read_checkpoint(path)
    assert not marker.exists()


def with_data_pkl(path, data, name=None):
    """Rewrite the torch checkpoint at ``path`` with ``data`` as its pickle (at ``name``: its own place)."""
    with zipfile.ZipFile(path) as archive:
        members = {member: archive.read(member) for member in archive.namelist()}
    own = next(n for n in members if n.endswith("data.pkl"))
    members.pop(own)
    members[name or own] = data
    with zipfile.ZipFile(path, "w") as archive:
        for member, body in members.items():
            archive.writestr(member, body)


def test_the_names_are_the_two_strings_just_before_stack_global_whatever_comes_around_them():
    """Pickles other writers make: a string before the two names is no name, and a string straight after a
    STACK_GLOBAL, or as a pickle's first opcode (protocol 1 has no PROTO), is read like any other."""
    name = lambda text: _unicode("SHORT_BINUNICODE", text)  # noqa: E731
    assert globals_of(b"\x80\x04" + name("key") + name("posix") + name("system") + b"\x93.") == [("posix", "system")]
    assert globals_of(b"\x80\x04" + name("posix") + name("system") + b"\x93" + name("after") + b"\x86.") == [
        ("posix", "system")
    ]
    assert globals_of(pickle.dumps("state_dict", protocol=1)) == []


def test_a_checkpoint_that_is_not_a_dict_is_said_to_hold_no_state_dict(tmp_path):
    path = tmp_path / "ckpt.pt"
    for saved in ([torch.zeros(1)], torch.zeros(1), {"state_dict": [torch.zeros(1)]}):
        torch.save(saved, path)
        with pytest.raises(ModelLoadError, match=r"holds no 'state_dict' \(RALI's ckpt.pt is \{'state_dict': ...\}\)$"):
            read_checkpoint(path)


def test_a_pickle_at_the_zip_s_root_is_scanned_too(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "ckpt.pt"
    torch.save({"state_dict": {}, "hook": RunsCommand(marker)}, path)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    with_data_pkl(path, data, name="data.pkl")
    with pytest.raises(ModelLoadError, match=f"^{path}: refused: its pickle imports (posix|nt).system"):
        read_checkpoint(path)
    with_data_pkl(path, b"\x80\x04" + _unicode("SHORT_BINUNICODE", "system") + b"\x93.", name="data.pkl")
    with pytest.raises(ModelLoadError, match=f"^{path}: refused: its pickle imports a name it does not spell out$"):
        read_checkpoint(path)
    assert not marker.exists()


def test_a_joblib_file_without_joblib_says_how_to_get_it(tmp_path, monkeypatch):
    path = tmp_path / "pca.pkl"
    joblib.dump(PCA(2).fit(np.eye(4)), path)
    monkeypatch.setitem(sys.modules, "joblib", None)
    with pytest.raises(
        MissingDependencyError,
        match=rf"^{path} is a joblib file: reading RALI's PCA needs joblib "
        r"\(pip install 'qinsight\[rali\]', or pip install joblib\)$",
    ):
        read_pca(path)


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path):
    """The released ckpt.pt may hold CUDA tensors: they are mapped to the CPU (here, where CUDA is absent)."""
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}}, path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in members if n.endswith("data.pkl"))
    assert members[name].count(b"X\x03\x00\x00\x00cpu") == 1  # torch.save's protocol 2 writes it so
    members[name] = members[name].replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            torch.load(path, weights_only=True)  # the tag is honoured: the check would be vacuous otherwise
    assert torch.equal(read_checkpoint(path)["w"], torch.arange(3.0))


def test_the_messages_name_the_file_and_the_problem(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"not a zip")
    with pytest.raises(
        ModelLoadError,
        match=r"ckpt.pt: not a readable torch checkpoint \(.*\); the file may be "
        r"half-downloaded, or saved in torch's legacy format \(load and save "
        r"it again\)$",
    ):
        read_checkpoint(path)
    torch.save({"state_dict": {}, "hook": RunsCommand(tmp_path / "x")}, path)
    with pytest.raises(
        ModelLoadError,
        match=r"refused: its pickle imports (posix|nt).system, which a checkpoint of "
        r"tensors never needs \(loading it could run code\)$",
    ):
        read_checkpoint(path)
    (tmp_path / "pca.pkl").write_bytes(pickle.dumps(RunsCommand(tmp_path / "x")))
    with pytest.raises(
        ModelLoadError,
        match=r"pca.pkl: cannot be read as a PCA \(UnpicklingError: refused: the "
        r"pickle imports (posix|nt).system, which a PCA never needs \(loading it "
        r"could run code\)\)$",
    ):
        read_pca(tmp_path / "pca.pkl")
    (tmp_path / "basis.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ModelLoadError, match=r"basis.npz: not a readable .npz file \("):
        read_basis(tmp_path / "basis.npz")


def test_a_pca_s_state_must_be_a_dict_and_its_mean_a_float_vector(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="^a PCA's state is a dict, not a list$"):
        rali_files.FittedPCA().__setstate__([1])
    for mean, found in ((np.zeros((2, 3)), "ndarray"), (np.arange(3), "ndarray"), ([0.5, 0.5], "list")):
        fitted = PCA(2).fit(np.eye(4))
        fitted.mean_ = mean
        joblib.dump(fitted, tmp_path / "pca.pkl")
        with pytest.raises(ModelLoadError, match=rf"pca.pkl: the PCA has no float vector 'mean_' \(found {found}\)$"):
            read_pca_mean(tmp_path / "pca.pkl")


def test_arrays_come_back_in_this_machine_s_byte_order(tmp_path):
    fitted = PCA(2).fit(np.random.default_rng(0).normal(size=(6, 3)))
    fitted.mean_ = fitted.mean_.astype(">f8" if sys.byteorder == "little" else "<f8")
    joblib.dump(fitted, tmp_path / "pca.pkl")
    loaded = read_pca(tmp_path / "pca.pkl").mean_
    assert loaded.dtype.isnative and np.array_equal(loaded, fitted.mean_)


def test_a_numpy_name_this_numpy_lacks_is_refused_not_crashed_on(tmp_path):
    (tmp_path / "pca.pkl").write_bytes(b"\x80\x04\x8c\x15numpy.core.multiarray\x8c\x08nothings\x93.")
    with pytest.raises(ModelLoadError, match="refused: the pickle imports numpy.core.multiarray.nothings"):
        read_pca(tmp_path / "pca.pkl")
    (tmp_path / "pca.pkl").write_bytes(b"\x80\x04\x8c\x16numpy._core.multiarray\x8c\x06scalar\x93.")
    monkeypatch_module = rali_files._import("numpy", "dtype")
    assert monkeypatch_module is np.dtype
    with pytest.raises(pickle.UnpicklingError, match="^numpy.nowhere.thing does not exist in this numpy$"):
        rali_files._import("numpy.nowhere", "thing")


def test_a_basis_file_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "basis.npz", vectors=np.zeros((2, 3)), scores=np.array([object(), 1], dtype=object))
    with pytest.raises(ModelLoadError, match="refused"):
        read_basis(tmp_path / "basis.npz")
    np.savez(tmp_path / "good.npz", vectors=np.ones((2, 3)))
    assert read_basis(tmp_path / "good.npz")["vectors"].shape == (2, 3)


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn's note on the version the file names
def test_the_tiny_pca_file_is_what_joblib_and_scikit_learn_write(rali_folder):
    """The tiny writer names scikit-learn's class without importing it; scikit-learn reads it as its own."""
    real = joblib.load(rali_folder / "pca.pkl")
    assert type(real) is PCA and real.mean_.shape == (16,)
    np.testing.assert_array_equal(read_pca_mean(rali_folder / "pca.pkl"), real.mean_.astype(np.float32))


# -- the forward pass, against the formulas ---------------------------------------------------------------


def _layer_norm(x, state, prefix, eps):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"], eps)


def official_forward(pixels, folder):
    """RALI's score from ckpt.pt, pca.pkl and best/config.json, written from the formulas: a ViT in plain
    tensor operations (no transformers module), then the PCA, the cosine prototypes and the softmax."""
    state = torch.load(folder / "ckpt.pt", weights_only=True)["state_dict"]
    config = json.loads((folder / "best" / "config.json").read_text())["vision_config"]
    v = lambda name: state[f"clip.vision_model.{name}"].double()  # noqa: E731
    heads, eps, patch = config["num_attention_heads"], 1e-5, config["patch_size"]
    x = torch.nn.functional.conv2d(pixels.double(), v("embeddings.patch_embedding.weight"), stride=patch)
    x = torch.cat([v("embeddings.class_embedding").expand(len(x), 1, -1), x.flatten(2).transpose(1, 2)], 1)
    x = x + v("embeddings.position_embedding.weight")
    vstate = {
        k.removeprefix("clip.vision_model."): t.double() for k, t in state.items() if k.startswith("clip.vision_model.")
    }
    x = _layer_norm(x, vstate, "pre_layrnorm", eps)
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layers.{i}"
        h = _layer_norm(x, vstate, f"{p}.layer_norm1", eps)
        q, k, w = (h @ v(f"{p}.self_attn.{n}_proj.weight").T + v(f"{p}.self_attn.{n}_proj.bias") for n in "qkv")
        split = lambda t: t.view(len(t), t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, w = split(q), split(k), split(w)
        attention = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ w
        attention = attention.transpose(1, 2).reshape(h.shape)
        x = x + attention @ v(f"{p}.self_attn.out_proj.weight").T + v(f"{p}.self_attn.out_proj.bias")
        h = _layer_norm(x, vstate, f"{p}.layer_norm2", eps) @ v(f"{p}.mlp.fc1.weight").T + v(f"{p}.mlp.fc1.bias")
        h = h * torch.sigmoid(1.702 * h)  # quick_gelu
        x = x + h @ v(f"{p}.mlp.fc2.weight").T + v(f"{p}.mlp.fc2.bias")
    f = _layer_norm(x[:, 0], vstate, "post_layernorm", eps) @ state["clip.visual_projection.weight"].double().T
    f = f.numpy()
    s = {
        name: state[f"scorer.{name}"].double().numpy()
        for name in ("pca_scale", "pca_components", "prototypes", "proto_scores", "logit_scale")
    }
    mean = joblib.load(folder / "pca.pkl").mean_
    z = ((f - mean) / np.abs(s["pca_scale"])) @ s["pca_components"].T
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    p = s["prototypes"] / np.linalg.norm(s["prototypes"], axis=1, keepdims=True)
    logits = max(float(s["logit_scale"]), 1e-6) * z @ p.T
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return w @ s["proto_scores"]


def official_pixels(image, side, mean, std):
    """CLIP's preprocessing as the demo's processor does it: shortest edge to ``side`` (PIL bicubic), the
    centre ``side`` x ``side`` crop, 1/255, then the mean and standard deviation."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    size = (side, int(side * long / short)) if width <= height else (int(side * long / short), side)
    resized = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    top, left = (resized.shape[0] - side) // 2, (resized.shape[1] - side) // 2
    crop = resized[top : top + side, left : left + side] / 255
    return torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1).copy())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_score_equals_the_official_formulas_to_1e5(rali, rali_folder):
    images = [
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
        for seed, (w, h) in enumerate([(56, 56), (112, 84), (64, 160), (300, 200)])
    ]
    processor = json.loads((rali_folder / "best" / "preprocessor_config.json").read_text())
    pixels = torch.stack(
        [official_pixels(i, 56, np.array(processor["image_mean"]), np.array(processor["image_std"])) for i in images]
    )
    expected = official_forward(pixels, rali_folder)
    results = rali.score(images)
    assert [r.error for r in results] == [None] * 4
    np.testing.assert_allclose([r.raw_score for r in results], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose([r.score for r in results], 1 + 4 * expected, atol=4e-5, rtol=0)
    assert len(set(np.round(expected, 6))) == 4  # the images are told apart: the check is not vacuous


def test_the_processor_gives_the_official_pixels(rali, rali_folder):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (84, 112, 3), dtype=np.uint8))
    processor = json.loads((rali_folder / "best" / "preprocessor_config.json").read_text())
    ours = rali.backend.encode([[]], [[image]]).inputs[0]
    theirs = official_pixels(image, 56, np.array(processor["image_mean"]), np.array(processor["image_std"]))
    torch.testing.assert_close(ours.double(), theirs, atol=1e-5, rtol=0)


# -- the judge it makes --------------------------------------------------------------------------------------


def test_scores_are_deterministic_batch_and_order_invariant(rali):
    images, _ = brightness_images(9, seed=11)
    one_by_one = [rali.score(i, batch_size=1).raw_score for i in images]
    batched = [r.raw_score for r in rali.score(images, batch_size=8)]
    reversed_order = [r.raw_score for r in rali.score(images[::-1], batch_size=4)][::-1]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6, rtol=0)
    np.testing.assert_allclose(reversed_order, one_by_one, atol=1e-6, rtol=0)
    assert len({round(s, 6) for s in one_by_one}) > 1


def test_a_bad_image_is_that_item_s_error_only(rali, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    images, _ = brightness_images(2, seed=2)
    results = rali.score(
        [images[0], str(tmp_path / "broken.png"), images[1], np.full((8, 8, 3), np.nan, dtype=np.float32)]
    )
    assert results[0].ok and results[2].ok
    assert "broken.png" in results[1].error and results[3].error


def test_what_rali_cannot_do_is_refused_with_what_to_use(rali):
    image = brightness_images(1, seed=0)[0][0]
    assert rali.score(image).ok  # fast, its default
    with pytest.raises(UsageError, match="use mode='fast'"):
        rali.score(image, mode="reason")
    with pytest.raises(UsageError, match="cannot do degradation"):
        rali.degradation(image)
    with pytest.raises(UsageError, match="cannot do comparison"):
        rali.compare(image, image)
    with pytest.raises(UsageError, match="cannot do comparison"):
        rali.rank([image, image], strategy="hybrid")


def test_large_images_are_judged_as_given_up_to_the_pixel_bound(rali):
    big = Image.new("RGB", (4000, 3000), (90, 90, 90))
    assert rali.load_image(big).size == (4000, 3000)  # its processor resizes: nothing to fit beforehand
    tight = QualityJudge(
        rali.backend, profile=rali.profile, image_bounds=rali.image_bounds.__class__(max_pixels=1_000_000)
    )
    width, height = tight.load_image(big).size
    assert width * height <= 1_000_000 and abs(width / height - 4 / 3) < 0.01


def test_the_trained_tiny_rali_rates_brightness(trained_rali):
    judge = QualityJudge.from_pretrained(trained_rali, device="cpu")
    images, levels = brightness_images(24, seed=99)
    results = judge.score(images)
    assert spearmanr([r.score for r in results], levels).statistic > 0.9
    rewards = judge.reward(images)
    assert torch.all((rewards >= 0) & (rewards <= 1))
    np.testing.assert_allclose(rewards.numpy(), np.clip([r.raw_score for r in results], 0, 1), atol=1e-6)
    ranking = judge.rank(images, strategy="score")
    assert ranking.order[0] == int(np.argmax([r.score for r in results]))
    assert levels[ranking.order[0]] >= sorted(levels)[-3]


# -- the family, chosen from the files ---------------------------------------------------------------------


def test_the_family_is_chosen_from_the_folder_s_files(rali_folder, tiny_model):
    assert family_of(rali_folder, "qwen2_5_vl").name == "rali"
    assert family_of(tiny_model, "rali").name == "qwen2_5_vl"


def test_the_family_is_known_before_loading_from_a_local_folder_or_the_profile(rali_folder, tmp_path):
    assert expected_family(str(rali_folder.parent), "RALI", "qwen2_5_vl").name == "rali"
    assert expected_family(str(rali_folder), None, "qwen2_5_vl").name == "rali"
    assert expected_family(str(tmp_path), None, "rali").name == "rali"  # recognised by nothing
    assert expected_family(str(tmp_path), "RALI", "qwen2_5_vl").name == "qwen2_5_vl"  # no such subfolder
    assert expected_family("ByteDance/Q-Insight", "RALI", "rali") is FAMILIES["rali"]
    with pytest.raises(ModelLoadError, match=r"^no model family 'video' is registered \(known: qwen2_5_vl, rali"):
        expected_family("ByteDance/Q-Insight", "x", "video")


def test_locate_downloads_the_expected_family_s_files_and_checks_what_arrived(rali_folder, monkeypatch):
    asked = {}

    def resolve(*args, **kwargs):
        asked.update(args=args, kwargs=kwargs)
        return rali_folder

    monkeypatch.setattr(backends_module, "resolve_checkpoint", resolve)
    folder, family = backends_module.locate("ByteDance/Q-Insight", "RALI", "abc123", True, "/cache", "rali")
    assert folder == rali_folder and family.name == "rali"
    assert asked == {
        "args": ("ByteDance/Q-Insight", "RALI", "abc123", True, "/cache"),
        "kwargs": {"model_type": None, "patterns": FAMILIES["rali"].files},
    }
    assert FAMILIES["rali"].files == ("ckpt.pt", "pca.pkl", "basis.npz", "best/*.json", "best/*.txt")


def test_a_half_written_rali_folder_names_what_is_missing(rali_folder, tmp_path):
    partial = tmp_path / "RALI"
    (partial / "best").mkdir(parents=True)
    for name in ("ckpt.pt", "best/config.json"):
        (partial / name).write_bytes((rali_folder / name).read_bytes())
    with pytest.raises(ModelLoadError, match="pca.pkl, best/preprocessor_config.json missing"):
        QualityJudge.from_pretrained(partial, profile="rali")


def test_a_profile_for_another_family_is_refused(rali_folder):
    with pytest.raises(
        ModelLoadError, match="judge profile 'q-insight' .* is for qwen2_5_vl models, but .* holds a rali model"
    ):
        QualityJudge.from_pretrained(rali_folder, profile="q-insight")


def test_files_that_do_not_fit_together_are_refused(rali_folder, tmp_path):
    folder = tmp_path / "RALI"
    (folder / "best").mkdir(parents=True)
    for name in ("ckpt.pt", "pca.pkl", "best/config.json", "best/preprocessor_config.json"):
        (folder / name).write_bytes((rali_folder / name).read_bytes())
    for scores in (np.zeros(9), np.zeros((6, 1)), np.float64(0.5)):
        np.savez(folder / "basis.npz", vectors=np.zeros((6, 8)), scores=scores)
        with pytest.raises(
            ModelLoadError,
            match=re.escape(f"basis.npz holds prototype scores of shape {np.shape(scores)}, ckpt.pt 6 prototypes"),
        ):
            QualityJudge.from_pretrained(folder)
    state = torch.load(rali_folder / "ckpt.pt", weights_only=True)
    state["state_dict"]["scorer.logit_scale"] = torch.tensor(float("nan"))
    torch.save(state, folder / "ckpt.pt")
    (folder / "basis.npz").unlink()
    with pytest.raises(ModelLoadError, match="not all finite"):
        QualityJudge.from_pretrained(folder)


def copy_of(rali_folder, folder, leave_out=()):
    (folder / "best").mkdir(parents=True)
    for name in ("ckpt.pt", "pca.pkl", "basis.npz", "best/config.json", "best/preprocessor_config.json"):
        if name not in leave_out:
            (folder / name).write_bytes((rali_folder / name).read_bytes())
    return folder


def test_the_scorer_itself_names_what_is_missing(rali_folder, tmp_path):
    """load_scorer checks on its own, for callers that come without the family's check first."""
    folder = copy_of(rali_folder, tmp_path / "RALI", leave_out=("pca.pkl", "best/config.json"))
    with pytest.raises(
        ModelLoadError,
        match=rf"^{folder}: not a complete RALI checkpoint: pca.pkl, best/config.json "
        r"missing \(it needs ckpt.pt, pca.pkl and best/ with CLIP's config and "
        r"processor\)$",
    ):
        load_scorer(folder)


def test_the_scorer_head_must_hold_every_value_as_floats(rali_folder, tmp_path):
    folder = copy_of(rali_folder, tmp_path / "RALI")
    saved = torch.load(rali_folder / "ckpt.pt", weights_only=True)
    for broken in (None, torch.arange(6)):  # missing, or a tensor of integers
        state = dict(saved["state_dict"])
        state.pop("scorer.prototypes") if broken is None else state.update({"scorer.prototypes": broken})
        torch.save({"state_dict": state}, folder / "ckpt.pt")
        with pytest.raises(
            ModelLoadError,
            match=rf"^{folder / 'ckpt.pt'}: 'scorer.prototypes' is missing or not a "
            r"float tensor$",
        ):
            load_scorer(folder)


def test_vision_weights_that_do_not_fit_the_config_are_refused(rali_folder, tmp_path):
    """The official load is strict: a weight the config has no place for is an error, not ignored."""
    folder = copy_of(rali_folder, tmp_path / "RALI")
    saved = torch.load(rali_folder / "ckpt.pt", weights_only=True)
    saved["state_dict"]["clip.vision_model.extra.weight"] = torch.zeros(2)
    torch.save(saved, folder / "ckpt.pt")
    with pytest.raises(
        ModelLoadError,
        match=rf"^{folder / 'ckpt.pt'}: its CLIP vision weights do not fit "
        r"best/config.json \(Error\(s\) in loading state_dict",
    ):
        load_scorer(folder)


def test_the_prototype_scores_range_is_logged_at_load(rali_folder, caplog):
    scores = torch.load(rali_folder / "ckpt.pt", weights_only=True)["state_dict"]["scorer.proto_scores"]
    with caplog.at_level(logging.INFO, logger="qinsight"):
        load_scorer(rali_folder)
    assert [r.getMessage() for r in caplog.records if r.name == "qinsight"] == [
        f"RALI: 6 prototypes in 8 PCA dimensions, prototype scores {float(scores.min()):.4g} to "
        f"{float(scores.max()):.4g}"
    ]


def head_of(components=(8, 16), scale=16, mean=16, prototypes=(6, 8), scores=6, logit=()):
    return (
        {
            "pca_components": torch.zeros(components),
            "pca_scale": torch.ones(scale),
            "prototypes": torch.zeros(prototypes),
            "proto_scores": torch.zeros(scores),
            "logit_scale": torch.ones(logit),
        },
        torch.zeros(mean),
    )


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"scale": 15}, "pca_scale (15,) and the PCA's mean (16,) should be (16,) like the components' rows"),
        ({"mean": 15}, "pca_scale (16,) and the PCA's mean (15,) should be (16,) like the components' rows"),
        (
            {"components": (16,), "prototypes": (6, 0)},
            "pca_scale (16,) and the PCA's mean (16,) should be (0,) like the components' rows",
        ),
        ({"prototypes": (6, 7)}, "prototypes (6, 7) should be (K, 8)"),
        ({"prototypes": (8,), "scores": 8}, "prototypes (8,) should be (K, 8)"),
        ({"scores": 5}, "proto_scores (5,) should be (6,) and logit_scale one number"),
        ({"logit": (2,)}, "proto_scores (6,) should be (6,) and logit_scale one number"),
        (
            {"scale": 15, "prototypes": (6, 7)},
            "pca_scale (15,) and the PCA's mean (16,) should be (16,) like the "
            "components' rows; prototypes (6, 7) should be (K, 8)",
        ),
    ],
)
def test_each_size_that_does_not_fit_is_named(tmp_path, changes, problem):
    head, mean = head_of(**changes)
    with pytest.raises(ModelLoadError, match=f"^{tmp_path}: RALI's files do not fit together: {re.escape(problem)}$"):
        _check_sizes(tmp_path, head, mean)
    _check_sizes(tmp_path, *head_of())  # the sizes that fit: no error


def test_the_spread_is_the_weighted_standard_deviation_of_the_prototype_scores():
    spread = PrototypeDistribution(
        torch.tensor([0.25, 0.75], dtype=torch.float64), torch.tensor([0.2, 0.6], dtype=torch.float64)
    )
    assert spread.expected() == pytest.approx((0.5, 0.03**0.5), abs=1e-12)


class FeaturesAsGiven(torch.nn.Module):
    """Stands in for CLIP's tower: the "pixels" given are the features."""

    def __init__(self):
        super().__init__()
        self.vision_model = lambda pixel_values: type("Output", (), {"pooler_output": pixel_values})()
        self.visual_projection = torch.nn.Identity()


@pytest.mark.parametrize("logit_scale", [0.5, -3.0])
def test_the_temperature_is_the_checkpoint_s_floored_at_1e_6(logit_scale):
    """softmax(max(s, 1e-6) x cos(z, prototypes)): a small scale is kept as it is, a negative one floored (uniform
    weights), as the official head does."""
    generator = torch.Generator().manual_seed(0)
    features, prototypes = torch.randn(3, 4, generator=generator), torch.randn(5, 2, generator=generator)
    head = {
        "pca_scale": torch.ones(4),
        "pca_components": torch.randn(2, 4, generator=generator),
        "prototypes": prototypes,
        "proto_scores": torch.rand(5, generator=generator),
        "logit_scale": torch.tensor(logit_scale),
    }
    weights = RaliScorer(FeaturesAsGiven(), torch.zeros(4), head)(features)
    z = features @ head["pca_components"].T
    cosine = (z / z.norm(dim=1, keepdim=True)) @ (prototypes / prototypes.norm(dim=1, keepdim=True)).T
    assert torch.allclose(weights, torch.softmax(max(logit_scale, 1e-6) * cosine, dim=1), atol=1e-7)


def test_an_error_without_words_is_named_by_its_type():
    assert _first_line(RuntimeError()) == "RuntimeError" and _first_line(RuntimeError(" a\n b ")) == "a"


@pytest.mark.parametrize(
    "processor, side",
    [
        (types.SimpleNamespace(crop_size={"height": 56, "width": 56}), 56),
        (types.SimpleNamespace(crop_size={"shortest_edge": 40}), 40),
        (types.SimpleNamespace(crop_size=None), 224),
        (object(), 224),  # a processor without a crop: CLIP's usual 224
    ],
)
def test_an_image_s_cost_follows_the_processor_s_crop(rali, processor, side):
    backend = RaliBackend(rali.backend.model, processor, torch.device("cpu"))
    assert backend.geometry.side == side and backend.geometry.tokens(10, 5000) == side * side // 196


def test_the_backend_s_size_device_and_refusal_to_write(rali_folder):
    backend = RaliBackend.load(rali_folder, device="cpu")
    tensors = [*backend.model.parameters(), *backend.model.buffers()]
    assert backend.memory_footprint() == sum(t.nbytes for t in tensors) > 4 * 37_000  # the weights, buffers too
    assert backend.to("meta") is backend and backend.device == torch.device("meta")
    assert {t.device.type for t in [*backend.model.parameters(), *backend.model.buffers()]} == {"meta"}
    with pytest.raises(
        UsageError,
        match=r"^RALI scores images without writing text: use mode='fast' for scores "
        r"\(there is no reasoning, degradation or comparison\); load a Q-Insight "
        r"checkpoint for those$",
    ):
        backend.generate(None, None)


def test_images_are_taken_as_they_are_up_to_the_pixel_bound_and_named_when_empty():
    geometry, bounds = NativeSize(57), ImageBounds(max_pixels=10_000)
    assert geometry.fit(90, 100, bounds) == (90, 100) and geometry.fit(400, 100, bounds) == (200, 50)
    assert geometry.tokens(1, 1) == 57 * 57 // 196 == 16  # each image the same cost, whatever its size
    with pytest.raises(ImageInputError, match="^image is 0x5: it has no pixels$"):
        geometry.fit(0, 5, bounds)
    with pytest.raises(ImageInputError, match="^a.png is 0x5: it has no pixels$"):
        geometry.fit(0, 5, bounds, "a.png")


def test_encoding_takes_one_image_per_row_on_the_default_device(rali_folder):
    backend = RaliBackend.load(rali_folder)  # device auto: the CPU here
    batch = backend.encode([[]] * 2, [[Image.new("RGB", (60, 60))], [Image.new("RGB", (70, 50))]])
    assert backend.device == torch.device("cpu") and batch.images_per_row == [1, 1]
    assert tuple(batch.inputs.shape) == (2, 3, 56, 56)
    with pytest.raises(UsageError, match="^RALI judges one image at a time; it cannot compare images$"):
        backend.encode([[]], [[Image.new("RGB", (8, 8))] * 2])


def test_fp32_however_it_is_spelt_and_nothing_else(rali_folder):
    for spelling in ("auto", "fp32", "float32", torch.float32, "torch.float32"):
        assert FAMILIES["rali"].dtype(spelling, torch.device("cpu")) is torch.float32
    for other in ("bf16", torch.float16, "float64"):
        with pytest.raises(
            ModelLoadError,
            match=rf"^dtype {other}: RALI runs in fp32, as its official demo does "
            r"\(its forward is checked in fp32\); leave dtype at auto$",
        ):
            FAMILIES["rali"].dtype(other, torch.device("cpu"))


def test_the_family_loads_on_the_device_it_is_given(rali_folder):
    backend = FAMILIES["rali"].load(rali_folder, device="meta", dtype=torch.float32, quantization=None)
    assert backend.device == torch.device("meta")
    assert {t.device.type for t in backend.model.parameters()} == {"meta"}


def test_the_command_line_records_rali_s_profile_and_mode(trained_rali, tmp_path):
    images = brightness_images(3, seed=4)[0]
    for k, image in enumerate(images):
        image.save(tmp_path / f"{k}.png")
    rows = tmp_path / "rows.jsonl"
    command = [
        sys.executable,
        "-m",
        "qinsight_sdk",
        "score",
        str(tmp_path),
        "--model",
        str(trained_rali),
        "-o",
        str(rows),
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(written) == 3 and all(
        r["settings"]["profile"] == "rali" and r["settings"]["mode"] == "fast" and r["error"] is None for r in written
    )
    refused = subprocess.run(command[:-2] + ["--mode", "reason"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "writes no text" in refused.stderr
