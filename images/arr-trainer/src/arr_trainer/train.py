"""Train the texture adapter to remove noise from synthetic textures.

Run as `accelerate launch -m arr_trainer.train --max-steps N [--cpu]`. Prints one
JSON line per step (main process only) and exits 1 when the loss is not finite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.nn import functional
from torch.utils.data import DataLoader

from arr_trainer.adapter import TextureAdapter
from arr_trainer.textures import NoisyTextures


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; training cannot continue meaningfully."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    max_steps: int = 100
    batch_size: int = 16
    image_size: int = 32
    dataset_size: int = 1024
    learning_rate: float = 3e-3
    noise: float = 0.3
    hidden: int = 32
    seed: int = 0
    cpu: bool = False
    mixed_precision: str = "no"
    output_dir: Path | None = None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="arr_trainer.train", description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=_positive_int, default=100, help="optimizer steps to run")
    parser.add_argument("--batch-size", type=_positive_int, default=16, help="textures per step per process")
    parser.add_argument("--image-size", type=_positive_int, default=32, help="texture side length in pixels")
    parser.add_argument(
        "--dataset-size", type=_positive_int, default=1024, help="distinct textures per epoch"
    )
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="AdamW learning rate")
    parser.add_argument("--noise", type=float, default=0.3, help="standard deviation of the added noise")
    parser.add_argument("--hidden", type=_positive_int, default=32, help="channels inside the adapter")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, weights and shuffling")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    parser.add_argument(
        "--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="accelerate mixed precision"
    )
    parser.add_argument("--output-dir", type=Path, help="write the trained adapter's weights here")
    args = parser.parse_args(argv)
    return TrainConfig(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        image_size=args.image_size,
        dataset_size=args.dataset_size,
        learning_rate=args.learning_rate,
        noise=args.noise,
        hidden=args.hidden,
        seed=args.seed,
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        output_dir=args.output_dir,
    )


def _batches(loader: DataLoader[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


def train(config: TrainConfig, report: Callable[[dict[str, Any]], None]) -> list[float]:
    """Run `config.max_steps` steps; `report` gets one record per step. Returns the losses."""
    accelerator = Accelerator(cpu=config.cpu, mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    model = TextureAdapter(hidden=config.hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    dataset = NoisyTextures(config.dataset_size, size=config.image_size, noise=config.noise, seed=config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    losses: list[float] = []
    batches = _batches(loader)
    for step in range(1, config.max_steps + 1):
        noisy, clean = next(batches)
        optimizer.zero_grad()
        loss = functional.mse_loss(model(noisy), clean)
        accelerator.backward(loss)
        optimizer.step()
        # Every process sees the same mean, so all of them stop together on a bad loss.
        value = float(accelerator.gather(loss.detach().float().reshape(1)).mean())
        losses.append(value)
        if accelerator.is_main_process:
            report({"step": step, "loss": value, "device": str(accelerator.device)})
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss is {value} at step {step}")
    accelerator.wait_for_everyone()
    if config.output_dir is not None and accelerator.is_main_process:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        accelerator.save(accelerator.unwrap_model(model).state_dict(), config.output_dir / "adapter.pt")
    return losses


def _print_json(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        train(config, _print_json)
    except NonFiniteLoss as error:
        print(
            f"arr_trainer.train: {error}; lower --learning-rate or check the data",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
