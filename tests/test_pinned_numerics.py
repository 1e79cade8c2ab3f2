"""The tests' float rounding is the same on every x86-64 CPU (conftest.py pins the kernels to
AVX2): a test that trains a tiny model and bounds the outcome reads the same numbers on an
AVX2 laptop, an AVX-512 Xeon and an AMD EPYC."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
import torch


def test_torch_dispatches_its_cpu_kernels_at_avx2():
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() not in ("x86_64", "AMD64") or not cpuinfo.is_file():
        pytest.skip("the pin applies to x86-64 CPUs")
    if " avx2" not in cpuinfo.read_text():
        pytest.skip("this CPU has no AVX2: its kernels are the older, narrower ones")
    if os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
        pytest.skip("ATEN_CPU_CAPABILITY was set outside the tests, which conftest.py respects")
    # "AVX512" here would mean torch loaded before conftest.py set ATEN_CPU_CAPABILITY; MKL and
    # oneDNN read their variables (set beside it) when torch first calls them
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
