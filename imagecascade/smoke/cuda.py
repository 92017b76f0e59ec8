"""Judge PyTorch's CUDA build and, with a GPU, the device itself, from the probe's `torch` step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from imagecascade.core.checks import SmokeChecks
from imagecascade.smoke.results import Status

_Add = Callable[[str, Status, str], None]


def cudnn_version_text(number: int) -> str:
    """cuDNN's integer version as X.Y.Z (9 and later: 90100 -> 9.1.0; 8: 8902 -> 8.9.2)."""
    if number >= 10000:
        return f"{number // 10000}.{number % 10000 // 100}.{number % 100}"
    return f"{number // 1000}.{number % 1000 // 100}.{number % 100}"


def evaluate_cuda(
    checks: SmokeChecks,
    torch: Mapping[str, Any] | None,
    unobserved: str,
    add: _Add,
    no_gpu: Callable[[str, str], None],
    gpu: bool,
) -> None:
    """One result per declared `[smoke.cuda]` check; `unobserved` says why `torch` is None, if it is."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    cuda = checks.cuda
    declared = [field.name for field in dataclasses.fields(cuda) if getattr(cuda, field.name) is not None]
    gpu_only = ("available", "min_devices", "matmul")
    if not gpu:
        for name in declared:
            if name in gpu_only:
                no_gpu(f"cuda {name}", f"cuda.{name}")
        declared = [name for name in declared if name not in gpu_only]
    if torch is None:
        for name in declared:
            add(f"cuda {name}", "fail", f"cuda.{name}: {unobserved}")
        return
    if torch.get("error"):
        for name in declared:
            add(f"cuda {name}", "fail", f"cuda.{name}: torch does not import: {torch['error']}")
        return
    build = f"torch {torch['version']}"
    if cuda.torch_cuda is not None:
        built = torch.get("cuda")
        if built is None:
            add("cuda torch_cuda", "fail", f"{build} is built without CUDA, expected CUDA {cuda.torch_cuda}")
        elif str(built).split(".")[: len(cuda.torch_cuda.split("."))] == cuda.torch_cuda.split("."):
            add("cuda torch_cuda", "pass", f"{build} is built with CUDA {built}")
        else:
            add("cuda torch_cuda", "fail", f"{build} is built with CUDA {built}, expected {cuda.torch_cuda}")
    if cuda.cudnn is not None:
        number = torch.get("cudnn")
        if not number:
            add("cuda cudnn", "fail", f"{build} has no cuDNN, expected {cuda.cudnn}")
        else:
            text = cudnn_version_text(int(number))
            ok = SpecifierSet(cuda.cudnn).contains(Version(text), prereleases=True)
            verb = "satisfies" if ok else "does not satisfy"
            add("cuda cudnn", "pass" if ok else "fail", f"cuDNN {text} {verb} {cuda.cudnn}")
    if cuda.arch_list is not None:
        compiled = list(torch.get("arch_flags") or [])
        missing = [arch for arch in cuda.arch_list if arch not in compiled]
        absent = " ".join(missing)
        if not missing:
            add("cuda arch_list", "pass", f"{build} is compiled for {' '.join(cuda.arch_list)}")
        elif not compiled:
            add(
                "cuda arch_list", "fail", f"CUDA architectures {absent} missing: {build} has none compiled in"
            )
        else:
            compiled_text = " ".join(compiled)
            add(
                "cuda arch_list",
                "fail",
                f"CUDA architectures {absent} missing from {build} ({compiled_text})",
            )
    if cuda.nccl is not None:
        ok = bool(torch.get("nccl")) == cuda.nccl
        state = "available" if torch.get("nccl") else "not available"
        add("cuda nccl", "pass" if ok else "fail", f"NCCL is {state} in {build}")
    if not gpu:
        return
    if cuda.available is not None:
        ok = bool(torch.get("cuda_available")) == cuda.available
        state = "available" if torch.get("cuda_available") else "not available"
        reason = f" ({torch['cuda_error']})" if torch.get("cuda_error") else ""
        add("cuda available", "pass" if ok else "fail", f"CUDA is {state} to {build}{reason}")
    if cuda.min_devices is not None:
        count = int(torch.get("device_count") or 0)
        ok = count >= cuda.min_devices
        add(
            "cuda min_devices",
            "pass" if ok else "fail",
            f"{build} sees {count} CUDA device{'s' if count != 1 else ''}"
            + ("" if ok else f", expected at least {cuda.min_devices}"),
        )
    if cuda.matmul:
        matmul = torch.get("matmul") or {"ok": False, "error": "not run"}
        if matmul.get("error"):
            add("cuda matmul", "fail", f"GPU matmul failed: {matmul['error']}")
        else:
            verb = "equals" if matmul["ok"] else "differs from"
            detail = f"max abs diff {matmul['max_abs_diff']:.3g}"
            add(
                "cuda matmul",
                "pass" if matmul["ok"] else "fail",
                f"GPU matmul {verb} the CPU result ({detail})",
            )
