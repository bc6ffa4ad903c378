"""One judgement configuration, resolved once, before any model loads.

Everything an answer depends on (the checkpoint, the judge profile, the model family, dtype, quantization,
image bounds, prompt order, decoding) is worked out here by :func:`resolve_judge_config`, and both the
record rows' settings (:meth:`JudgeConfig.settings`) and the judge (``QualityJudge.from_config``, through
:meth:`JudgeConfig.load_backend`) come from the result. The command line, the service, Ray workers,
evaluation and ``QualityJudge.from_pretrained`` all go through it, so what a row records is what was loaded.

The profile is chosen as :func:`qinsight_sdk.judging.profiles.choose_profile` says; a checkpoint's own profile
file is looked up before downloading the weights. When the hub cannot be asked (offline, not cached), that
is said in ``profile_source``, and the file is checked again once the weights are local: a profile there
that differs from the one chosen is an error, never a silent difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends import ModelFamily, expected_family, family_named, locate
from ..backends.checkpoints import PROFILE_FILE, default_model, default_subfolder, profile_lookup
from ..errors import ModelLoadError, UsageError
from ..io.images import ImageBounds
from ..io.records import answer_settings
from .profiles import JudgeProfile, choose_profile, load_profile_file
from .prompts import PromptOrder

if TYPE_CHECKING:
    from .decoding import DecodingOptions

_UNASKED = "the hub could not be asked for its qinsight_judge.json"


@dataclass(frozen=True)
class JudgeConfig:
    """A judgement's settings, resolved (see the module docstring). Picklable, for Ray workers."""

    model: str
    subfolder: str | None
    revision: str | None
    profile: JudgeProfile
    profile_source: str
    family: str
    device: str
    dtype: Any  # a torch.dtype, as the family chose it for the device
    quantization: str | None = None
    image_bounds: ImageBounds = field(default_factory=ImageBounds)
    prompt_order: str | None = None  # None: the profile's own place for the image
    decoding: DecodingOptions | None = None  # resolve_judge_config always sets it (greedy by default)
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    local_files_only: bool = False
    cache_dir: str | None = None

    @property
    def default_mode(self) -> str:
        """The score mode when none is asked for: reason, or fast for a judge that writes no text."""
        return "reason" if family_named(self.family).writes_text else "fast"

    def mode(self, asked: str | None) -> str:
        """The score mode a call runs in: ``asked``, else :attr:`default_mode`; reason mode on a judge
        that writes no text is refused."""
        if asked is None:
            return self.default_mode
        if asked == "reason" and not family_named(self.family).writes_text:
            raise UsageError(
                f"mode reason: this {self.family} judge writes no text, so it has no reasoning to "
                "give; use mode fast (its default)"
            )
        return asked

    def settings(self, **task: Any) -> dict[str, Any]:
        """The record rows' ``settings`` for answers this configuration gives (``task``: the task's own)."""
        order = self.prompt_order or self.profile.own_order().value
        return answer_settings(
            self.model,
            self.subfolder,
            self.revision,
            self.profile.settings_name(),
            self.dtype,
            order,
            self.image_bounds.max_pixels,
            self.quantization,
            self.decoding,
            **task,
        )

    def load_backend(self) -> Any:
        """The model: the checkpoint located (downloaded for a hub id), checked to hold this family and the
        profile chosen, and loaded by its family. ``QualityJudge.from_config`` builds the judge on it."""
        folder, family = locate(
            self.model, self.subfolder, self.revision, self.local_files_only, self.cache_dir, self.family
        )
        self._check_loaded_as_chosen(folder, family)
        return family.load(
            folder,
            device=self.device,
            dtype=self.dtype,
            attn_implementation=self.attn_implementation,
            trust_remote_code=self.trust_remote_code,
            quantization=self.quantization,
        )

    def _check_loaded_as_chosen(self, folder: Path, family: ModelFamily) -> None:
        if family.name != self.family:
            raise ModelLoadError(
                f"{folder} holds a {family.name} model, but judge profile {self.profile.name!r} "
                f"({self.profile_source}) is for {self.family} models"
            )
        own = folder / PROFILE_FILE
        if _UNASKED in self.profile_source and own.is_file() and load_profile_file(own) != self.profile:
            raise ModelLoadError(
                f"{folder} brings its own judge profile ({PROFILE_FILE}), which could not be read "
                f"before the download ({_UNASKED}); the settings were resolved with "
                f"{self.profile.name!r}. Run again now that it is downloaded, or name the "
                "profile (--judge / profile=)"
            )


def resolve_judge_config(
    model: str | Path | None = None,
    subfolder: str | None = None,
    *,
    revision: str | None = None,
    profile: JudgeProfile | str | Path | None = None,
    device: str = "auto",
    dtype: Any = "auto",
    quantization: str | None = None,
    image_bounds: ImageBounds | None = None,
    prompt_order: PromptOrder | str | None = None,
    decoding: DecodingOptions | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    local_files_only: bool = False,
    cache_dir: str | None = None,
    comparison: bool = False,
) -> JudgeConfig:
    """Resolve a judgement's settings without loading (or downloading) the weights.

    Args:
        model: a Hugging Face id or a local folder (default: ``$QINSIGHT_MODEL``, else ByteDance/Q-Insight).
        subfolder: inside the model (default for ByteDance/Q-Insight: score_degradation, or comparison
            when ``comparison``).
        revision: the hub revision.
        profile: a profile name, file or ``JudgeProfile`` (default: as ``choose_profile`` picks it).
        device: auto, cpu, cuda, cuda:N or mps.
        dtype: auto or a dtype name; resolved for the device as the model family does it.
        quantization: "8bit", "4bit" (Qwen2.5-VL judges only), or None ("none" and "full" mean None).
        image_bounds: the pixel bounds images are fitted to.
        prompt_order: where a single image goes in the prompt (None: the profile's own place).
        decoding: how answers are sampled.
        attn_implementation, trust_remote_code, local_files_only, cache_dir: passed to loading.
        comparison: choose the comparison weights by default (ByteDance/Q-Insight only).

    Returns:
        The resolved ``JudgeConfig``.
    """
    from ..backends.devices import choose_device
    from .decoding import DecodingOptions

    model = str(model) if model is not None else default_model()
    if not model:
        raise UsageError("the model is empty: name a Hugging Face id or a folder (or leave it out for the default)")
    subfolder = default_subfolder(model, comparison) if subfolder is None else subfolder
    family = expected_family(model, subfolder, choose_profile(profile, model, subfolder)[0].model_type)
    own, asked = profile_lookup(model, subfolder, revision, cache_dir)
    chosen, why = choose_profile(profile, model, subfolder, own, family.default_profile)
    if not asked and profile is None:
        why = f"{why}; {_UNASKED}, so it is checked after the download"
    if chosen.model_type != family.name:
        raise ModelLoadError(
            f"judge profile {chosen.name!r} ({why}) is for {chosen.model_type} models, but "
            f"{model}{'/' + subfolder if subfolder else ''} holds a {family.name} model"
        )
    quantization = None if quantization in ("none", "full") else quantization  # the node's and CLI's spellings
    if quantization and family.name != "qwen2_5_vl":
        raise UsageError(
            f"quantization {quantization!r} applies to Qwen2.5-VL judges; a {family.name} judge loads in full precision"
        )
    chosen_device = choose_device(device)
    return JudgeConfig(
        model,
        subfolder,
        revision,
        chosen,
        why,
        family.name,
        str(device),
        family.dtype(dtype, chosen_device),
        quantization,
        image_bounds or ImageBounds(),
        PromptOrder(prompt_order).value if prompt_order is not None else None,
        decoding or DecodingOptions(),
        attn_implementation,
        trust_remote_code,
        local_files_only,
        cache_dir,
    )
