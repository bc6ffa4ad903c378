"""A tiny RALI in the released file layout, for tests and for trying the pipeline without a download.

``build_tiny_rali(folder)`` writes what ``ByteDance/Q-Insight``'s ``RALI/`` holds, at toy sizes: ``best/``
(a CLIP config with a 2-layer vision tower, and its image processor's config), ``ckpt.pt`` (a ``state_dict``
with every ``clip.*`` weight, text tower included, and the ``scorer.*`` values), a joblib ``pca.pkl`` that
names scikit-learn's PCA class as the real one does (written without scikit-learn) and ``basis.npz``.

Random: the prototypes and their scores are random, so the scores mean nothing. ``trained=True``: the PCA
is fitted to the tiny CLIP's features of synthetic images and the prototype head to their brightness (a
few hundred Adam steps on cached features, seconds on a CPU), so the score follows the mean grey level
(0 to 1, which the profile maps onto 1-5 as 1 + 4 x level), as the trained tiny Qwen judge's does.
"""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import MissingDependencyError
from . import BASIS, CHECKPOINT, CLIP_FOLDER, PCA
from .model import RaliScorer

SIDE = 56  # the processor's resize and crop
COMPONENTS, PROTOTYPES = 8, 6
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_clip_config() -> dict[str, Any]:
    """A CLIPModel config of toy size (the released one is ViT-L/14 with a 768-wide projection)."""
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": 16,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "vocab_size": 64,
            "max_position_embeddings": 16,
            "hidden_act": "quick_gelu",
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
            "projection_dim": 16,
        },
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "image_size": SIDE,
            "patch_size": 14,
            "hidden_act": "quick_gelu",
            "projection_dim": 16,
        },
    }


def build_tiny_rali(
    folder: str | Path, seed: int = 0, trained: bool = False, clip_config: dict[str, Any] | None = None
) -> Path:
    """Write a tiny RALI checkpoint to ``folder`` (see the module docstring); returns the folder.

    Args:
        folder: where to write it (created; files in it are replaced).
        seed: seeds the weights, so a build repeats exactly.
        trained: fit the PCA and the prototype head to rate brightness.
        clip_config: a ``CLIPModel`` config in place of the toy one (``bench/gpu.py`` times RALI's real
            ViT-L/14 shape with random weights this way); its vision ``image_size`` is the processor's crop.

    Returns:
        ``folder`` as a ``Path``.
    """
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    (folder / CLIP_FOLDER).mkdir(parents=True, exist_ok=True)
    config = clip_config or tiny_clip_config()
    side = config["vision_config"]["image_size"]
    _write_json(folder / CLIP_FOLDER / "config.json", config)
    _write_json(
        folder / CLIP_FOLDER / "preprocessor_config.json",
        {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": side},
            "resample": 3,
            "do_center_crop": True,
            "crop_size": {"height": side, "width": side},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": OPENAI_MEAN,
            "image_std": OPENAI_STD,
            "do_convert_rgb": True,
        },
    )
    torch.manual_seed(seed)
    clip = CLIPModel(CLIPConfig(**config)).eval()
    width = config["projection_dim"]
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (width,), generator=generator) * 2 - 1  # the forward divides by |scale|
    head = {
        "pca_scale": (torch.rand(width, generator=generator) + 0.5) * signs,
        "pca_components": torch.linalg.qr(torch.randn(width, COMPONENTS, generator=generator))[0].T.contiguous(),
        "prototypes": torch.randn(PROTOTYPES, COMPONENTS, generator=generator),
        "proto_scores": 0.3 + 0.4 * torch.rand(PROTOTYPES, generator=generator),  # the official init
        "logit_scale": torch.tensor(10.0),
    }
    mean = torch.randn(width, generator=generator) * 0.1
    if trained:
        mean, head = _fit_to_brightness(clip, head, seed, side)
    state = OrderedDict((f"clip.{k}", v.contiguous()) for k, v in clip.state_dict().items())
    state.update((f"scorer.{k}", v.detach().clone()) for k, v in head.items())
    torch.save({"state_dict": state}, folder / CHECKPOINT)
    write_pca(
        folder / PCA,
        {
            "n_components": COMPONENTS,
            "mean_": mean.double().numpy(),
            "components_": head["pca_components"].double().numpy(),
            "_sklearn_version": "1.5.2",
        },
    )
    np.savez(folder / BASIS, vectors=head["prototypes"].numpy(), scores=head["proto_scores"].numpy())
    return folder


def brightness_images(count: int, seed: int, side: int = 64) -> tuple[list[Any], list[float]]:
    """Seeded synthetic images (a grey level with texture) and their mean levels in [0, 1]."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, levels = [], []
    for _ in range(count):
        level = rng.uniform(0.05, 0.95)
        pixels = np.clip(level * 255 + rng.normal(0, 18, (side, side, 3)), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
        levels.append(float(pixels.mean() / 255))
    return images, levels


def _fit_to_brightness(
    clip: Any, head: dict[str, torch.Tensor], seed: int, side: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PCA of the tiny CLIP's features of synthetic images, and a prototype head fitted to their levels."""
    from transformers import CLIPImageProcessor

    images, levels = brightness_images(192, seed)
    processor = CLIPImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    )
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output).double()
    mean = features.mean(0)
    _, _, vectors = torch.linalg.svd(features - mean, full_matrices=False)
    head = dict(head, pca_components=vectors[:COMPONENTS].float(), pca_scale=(features - mean).std(0).float())
    target = torch.tensor(levels, dtype=torch.float32)
    # the prototypes' scores stay within 0-1 (through a sigmoid), as the released ones are taken to
    trainable = {
        "prototypes": torch.nn.Parameter(head["prototypes"].clone()),
        "logit_scale": torch.nn.Parameter(head["logit_scale"].clone()),
        "score_logits": torch.nn.Parameter(torch.logit(head["proto_scores"].clone())),
    }
    optimiser = torch.optim.Adam(trainable.values(), lr=0.05)
    for _ in range(400):
        fitted = dict(
            head,
            prototypes=trainable["prototypes"],
            logit_scale=trainable["logit_scale"],
            proto_scores=torch.sigmoid(trainable["score_logits"]),
        )
        score = RaliScorer(_Features(), mean.float(), fitted)(features.float()) @ fitted["proto_scores"]
        loss = torch.nn.functional.mse_loss(score, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return mean.float(), dict(
            head,
            prototypes=trainable["prototypes"].detach().clone(),
            logit_scale=trainable["logit_scale"].detach().clone(),
            proto_scores=torch.sigmoid(trainable["score_logits"]).detach().clone(),
        )


class _Features(torch.nn.Module):
    """Stands in for the vision tower when fitting on cached features: features in, features out."""

    class _Identity(torch.nn.Module):
        def forward(self, pixel_values: torch.Tensor) -> Any:
            return type("Output", (), {"pooler_output": pixel_values})()

    def __init__(self) -> None:
        super().__init__()
        self.vision_model = self._Identity()
        self.visual_projection = torch.nn.Identity()


def write_pca(path: Path, state: dict[str, Any]) -> None:
    """A joblib file holding a scikit-learn PCA with ``state``, as ``joblib.dump(pca, path)`` writes one,
    written without scikit-learn (the class is named, never imported)."""
    try:
        from joblib import numpy_pickle
    except ImportError:
        raise MissingDependencyError("writing a tiny RALI needs joblib (pip install 'qinsight[rali]')") from None

    class _NamedPCA:
        """Pickled as scikit-learn's ``PCA`` by name: state in, BUILD out, as a real PCA pickles."""

        def __reduce_ex__(self, protocol: int) -> Any:
            return (_new_pca, (), state)

    class _Pickler(numpy_pickle.NumpyPickler):
        dispatch = numpy_pickle.NumpyPickler.dispatch.copy()

        def save_global(self, obj: Any, name: str | None = None) -> None:
            if obj is _new_pca:  # what sklearn's PCA pickles as: copyreg.__newobj__ on the class, then BUILD
                self.write(pickle.GLOBAL + b"sklearn.decomposition._pca\nPCA\n")
                return
            super().save_global(obj, name)

        dispatch[type(_new_pca)] = save_global

    with open(path, "wb") as handle:
        _Pickler(handle, protocol=pickle.DEFAULT_PROTOCOL).dump(_NamedPCA())


def _new_pca() -> None:
    """A marker the pickler above writes as scikit-learn's PCA class (never called)."""


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
