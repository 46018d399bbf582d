"""The decoder primitives' own rules: which errors mean "out of memory" (CTranslate2's real messages),
and what a GPU that loads a model but cannot run it says at load time."""

from __future__ import annotations

import pytest

from carevoice.engine.decoder import is_out_of_memory

# CTranslate2 4.8's own messages (src/cuda/utils.h CUDA_CHECK / CUBLAS_CHECK / CUDNN_CHECK; both CUDA
# allocators, cub's caching one and cudaMallocAsync, report through CUDA_CHECK), a host allocation
# (std::bad_alloc, which pybind11 turns into MemoryError), and errors that must not be taken for one.
MESSAGES = [
    (RuntimeError("CUDA failed with error out of memory"), True),
    (RuntimeError("cuBLAS failed with status CUBLAS_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("cuDNN failed with status CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("CUDA failed with error cudaErrorMemoryAllocation"), True),
    (MemoryError(), True),
    (RuntimeError("std::bad_alloc"), True),
    (RuntimeError("CUDA failed with error invalid device ordinal"), False),
    (RuntimeError("cuBLAS failed with status CUBLAS_STATUS_NOT_INITIALIZED"), False),
    (RuntimeError("Library libcublas.so.12 is not found or cannot be loaded"), False),
    (ValueError("Requested int8_float16 compute type, but the target device or backend do not support efficient int8_float16 computation."), False),
    (RuntimeError("CUDA failed with error an illegal memory access was encountered"), False),
]


@pytest.mark.parametrize(("error", "expected"), MESSAGES, ids=[str(e) or type(e).__name__ for e, _ in MESSAGES])
def test_out_of_memory_is_told_apart_by_ctranslate2_s_own_messages(error: BaseException, expected: bool) -> None:
    assert is_out_of_memory(error) is expected
