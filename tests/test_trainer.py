"""The arr-trainer training code, run on the host with the CPU PyTorch wheel (torch 2.13.0 here).

The image runs the same code on torch 2.6.0; nothing here depends on the version difference.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.torch
# Without the trainer extra these are skipped, except under CI=true, where the import fails loudly.
if os.environ.get("CI", "").lower() != "true":
    pytest.importorskip("torch", reason="needs the trainer extra (nox -s trainer)")
    pytest.importorskip("accelerate", reason="needs the trainer extra (nox -s trainer)")
import torch  # noqa: E402

SRC = Path(__file__).resolve().parent.parent / "images" / "arr-trainer" / "src"
# The package lives in its image folder, not in this repository's package; import it from there.
sys.path.insert(0, str(SRC))

from arr_trainer.adapter import TextureAdapter  # noqa: E402
from arr_trainer.textures import NoisyTextures, texture  # noqa: E402
from arr_trainer.train import TrainConfig, main, parse_args, train  # noqa: E402

# Small enough that 30 CPU steps take about a second.
SMALL = {"batch_size": 8, "image_size": 16, "hidden": 8, "dataset_size": 64, "cpu": True}


@pytest.mark.parametrize("size", [2, 16, 33])
def test_texture_shape_and_range(size: int) -> None:
    image = texture(torch.Generator().manual_seed(1), size)
    assert image.shape == (3, size, size)
    assert image.dtype == torch.float32
    assert float(image.abs().max()) <= 1.0


def test_textures_are_deterministic_per_seed_and_index() -> None:
    first, second = NoisyTextures(8, size=16, seed=3), NoisyTextures(8, size=16, seed=3)
    for index in range(8):
        assert all(torch.equal(a, b) for a, b in zip(first[index], second[index], strict=True))
    assert not torch.equal(first[0][1], NoisyTextures(8, size=16, seed=4)[0][1])
    assert not torch.equal(first[0][1], first[1][1])


def test_noisy_pair_differs_by_the_noise() -> None:
    noisy, clean = NoisyTextures(1, size=32, noise=0.3)[0]
    assert noisy.shape == clean.shape == (3, 32, 32)
    assert 0.2 < float((noisy - clean).std()) < 0.4


@pytest.mark.parametrize(("length", "size"), [(0, 16), (4, 1)])
def test_dataset_rejects_empty_shapes(length: int, size: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        NoisyTextures(length, size=size)


def test_dataset_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        NoisyTextures(2)[2]


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (4, 3, 16, 24)])
def test_adapter_keeps_the_shape_and_starts_as_identity(shape: tuple[int, ...]) -> None:
    batch = torch.randn(shape)
    adapter = TextureAdapter(hidden=8)
    with torch.no_grad():
        out = adapter(batch)
    assert out.shape == batch.shape
    assert torch.equal(out, batch)


def _records() -> tuple[list[dict[str, Any]], Any]:
    records: list[dict[str, Any]] = []
    return records, records.append


def test_two_steps_give_a_finite_loss() -> None:
    records, report = _records()
    losses = train(TrainConfig(max_steps=2, **SMALL), report)
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert [record["step"] for record in records] == [1, 2]
    assert records[0]["device"] == "cpu"


def test_loss_decreases_over_thirty_steps() -> None:
    losses = train(TrainConfig(max_steps=30, seed=0, learning_rate=1e-2, **SMALL), lambda record: None)
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_weights_are_saved_when_asked(tmp_path: Path) -> None:
    train(TrainConfig(max_steps=1, output_dir=tmp_path / "out", **SMALL), lambda record: None)
    state = torch.load(tmp_path / "out" / "adapter.pt")
    TextureAdapter(hidden=8).load_state_dict(state)


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["--max-steps", "2"], "max_steps", 2),
        (["--cpu"], "cpu", True),
        ([], "cpu", False),
        (["--mixed-precision", "bf16"], "mixed_precision", "bf16"),
        (["--output-dir", "/tmp/x"], "output_dir", Path("/tmp/x")),
    ],
)
def test_parse_args(argv: list[str], field: str, expected: Any) -> None:
    assert getattr(parse_args(argv), field) == expected


@pytest.mark.parametrize("argv", [["--max-steps", "0"], ["--mixed-precision", "fp8"], ["--batch-size", "x"]])
def test_parse_args_rejects(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parse_args(argv)
    assert raised.value.code == 2


def test_non_finite_loss_exits_1_with_one_message(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--max-steps", "3", "--cpu", "--noise", "inf", "--image-size", "8", "--hidden", "4"])
    out, err = capsys.readouterr()
    assert code == 1
    assert [json.loads(line)["step"] for line in out.splitlines()] == [1]
    assert err.strip().splitlines() == [
        "arr_trainer.train: loss is nan at step 1; lower --learning-rate or check the data"
    ]


def test_cli_prints_one_json_line_per_step() -> None:
    """`python -m arr_trainer.train` as a real process; the image wraps the same module in
    `accelerate launch`, which its smoke check runs (here it would add ~20 s of start-up)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "arr_trainer.train",
            "--max-steps",
            "2",
            "--cpu",
            "--image-size",
            "16",
            "--hidden",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [record["step"] for record in records] == [1, 2]
    assert all(math.isfinite(record["loss"]) for record in records)
