"""A few GRPO steps of the embedded model through engine.train on one device; prints step time, generation
tokens/s and the learner's model-FLOPs utilisation (MFU). `bench/gpu_check.sh` runs it on CUDA.

MFU = 6 * parameters * trained tokens per second / the device's peak dense bf16 FLOP/s (the usual estimate:
forward + backward of a dense decoder, attention FLOPs not counted). Trained tokens are prompt + response
tokens of every trained sample (the learner's `tokens_per_s`). The first step is a warm-up (CUDA context,
allocator, kernel selection) and is left out of the medians.
The local generator decodes with its own copy of the policy on the learner's device; the output says where.

    .venv/bin/python bench/gpu_check.py                           # CUDA; fails with exit code 2 without it
    .venv/bin/python bench/gpu_check.py --device cpu --steps 2 --prompts 1 --group-size 2 --max-new-tokens 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, matched against torch.cuda.get_device_name() in order.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("4090", 165e12),
)


class NoDevice(RuntimeError):
    """The requested device is not usable here."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the same path)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=5, help="training steps; the first is a warm-up")
    p.add_argument("--prompts", type=int, default=16, help="problems per step")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--micro-batch-tokens", type=int, default=16384)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="override the detected dense bf16 peak")
    p.add_argument("--json", default=None, help="also write the report here")
    return p.parse_args(argv)


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a known device (FLOP/s), None for an unknown one."""
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def mfu(params: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model-FLOPs utilisation: 6 * N * tokens/s over the peak."""
    return None if not peak else 6.0 * params * tokens_per_s / peak


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NoDevice(
                f"--device {device}: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is "
                "False); run this on a GPU machine with a CUDA build of torch, or pass --device cpu for a dry run"
            )
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"


def config(args: argparse.Namespace, out_dir: Path) -> Any:
    from engine.config import load_config
    from engine.run import DEFAULT_CONFIG

    overrides = {
        "model.path": args.model,
        "learner.device": args.device,
        "generation.backend": "local",
        "rollout.prompts_per_step": args.prompts,
        "rollout.group_size": args.group_size,
        "generation.sampling.max_new_tokens": args.max_new_tokens,
        "learner.micro_batch_tokens": args.micro_batch_tokens,
        "data.num_problems": max(64, args.prompts * args.steps),
        "run.steps": args.steps,
        "run.save_every": 10**6,
        "run.keep_checkpoints": 1,
        "run.output_dir": str(out_dir),
        "run.name": "gpu_check",
    }
    return load_config(DEFAULT_CONFIG, [f"{k}={v}" for k, v in overrides.items()])


def generator_info(cfg: Any, device: str) -> tuple[str, int]:
    """Where engine.train's local backend decodes, and the model's parameter count: build the backend as the
    training loop does and look."""
    import torch

    from engine.train import make_backend

    backend = make_backend(cfg, torch.device(device))
    try:
        params = list(backend.model.parameters())
        return str(params[0].device), sum(p.numel() for p in params)
    finally:
        asyncio.run(backend.close())


def summarise(rows: list[dict[str, Any]], *, params: int, peak: float | None) -> dict[str, Any]:
    """Medians over the steps after the warm-up (all steps when there is only one)."""
    timed = rows[1:] or rows

    def med(key: str) -> float | None:
        values = [float(r[key]) for r in timed if r.get(key) is not None]
        return statistics.median(values) if values else None

    train_tps = med("train/tokens_per_s")
    steps = [float(r["time_rollout_s"]) + float(r["time_train_s"]) for r in timed]
    return {
        "steps_timed": len(timed),
        "step_s": {"median": statistics.median(steps), "min": min(steps), "max": max(steps)},
        "rollout_s": med("time_rollout_s"),
        "generating_s": med("time_generating_s"),
        "train_s": med("time_train_s"),
        "gen_tokens_per_s": med("gen_tokens_per_s"),
        "train_tokens_per_s": train_tps,
        "mfu": None if train_tps is None else mfu(params, train_tps, peak),
        "reward_mean": med("reward_mean"),
        "loss": [r.get("train/loss") for r in rows],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from engine.records import METRICS_FILE, read_jsonl
    from engine.train import train

    name = describe_device(args.device)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(name) if args.device != "cpu" else None
    with tempfile.TemporaryDirectory(prefix="evom-gpu-check-") as tmp:
        cfg = config(args, Path(tmp))
        generator, params = generator_info(cfg, args.device)
        started = time.perf_counter()
        run_dir = asyncio.run(train(cfg, progress=False))
        wall = time.perf_counter() - started
        rows = [r for r in read_jsonl(run_dir / METRICS_FILE) if "time_train_s" in r]
    report = {
        "device": name,
        "torch": torch.__version__,
        "peak_bf16_tflops": None if peak is None else peak / 1e12,
        "params": params,
        "config": vars(args),
        "wall_s": wall,
        "generator": generator,
        **summarise(rows, params=params, peak=peak),
    }
    if args.device.startswith("cuda"):
        report["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return report


def render(report: dict[str, Any]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    step, peak = report["step_s"], fmt(report["peak_bf16_tflops"], ".0f")
    return "\n".join(
        [
            f"device          {report['device']} (torch {report['torch']}, peak bf16 {peak} TFLOP/s)",
            f"model           {report['config']['model']} ({report['params'] / 1e6:.1f}M params)",
            f"batch           {report['config']['prompts']} prompts x G={report['config']['group_size']}, "
            f"max_new_tokens {report['config']['max_new_tokens']}, {report['steps_timed']} timed steps",
            f"step time       {step['median']:.2f} s (min {step['min']:.2f}, max {step['max']:.2f}); "
            f"generate {fmt(report['generating_s'], '.2f')} s, train {fmt(report['train_s'], '.2f')} s",
            f"generation      {fmt(report['gen_tokens_per_s'], '.0f')} tokens/s "
            f"(local backend, on {report['generator']})",
            f"learner         {fmt(report['train_tokens_per_s'], '.0f')} tokens/s, MFU {fmt(report['mfu'], '.2%')}",
            f"losses          {report['loss']}",
            f"wall            {report['wall_s']:.1f} s for the whole run",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except NoDevice as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
