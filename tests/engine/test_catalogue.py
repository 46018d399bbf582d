"""The catalogue's names and repositories agree with faster-whisper's own, and its figures are sane."""

from __future__ import annotations

from faster_whisper.utils import _MODELS

from carevoice.engine.catalogue import CATALOGUE, COMPUTE_TYPES, Source, find_model


def test_faster_whisper_names_map_to_its_own_repositories() -> None:
    known = [model for model in CATALOGUE if model.faster_whisper_knows]
    assert len(known) == len(CATALOGUE) - 1  # all but breeze-asr-25
    for model in known:
        assert _MODELS[model.name] == model.repo, model.name


def test_gpu_memory_grows_with_size_and_published_figures_win() -> None:
    sizes = [find_model(name) for name in ("tiny", "base", "small", "medium", "large-v3")]
    for compute_type in COMPUTE_TYPES:
        needs = [model.gpu_mib(compute_type)[0] for model in sizes if model is not None]
        assert needs == sorted(needs) and len(needs) == 5
    large_v2 = find_model("large-v2")
    assert large_v2 is not None
    assert large_v2.gpu_mib("float16") == (4525, Source.PUBLISHED)
    assert large_v2.gpu_mib("int8_float16")[1] is Source.ESTIMATE
    estimate = large_v2.gpu_mib("int8_float16")[0]
    assert abs(estimate - 2926) < 100  # the estimate's formula was fitted to the published int8 figure
