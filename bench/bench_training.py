"""Training throughput: the DEEPaaS training engine against a plain hand-written PyTorch loop (target: ratio >= 0.95).

Both train the same model on the same data with the same batch size, precision, device, optimizer (AdamW) and
logging cadence (a loss read back every ``--log-every`` steps, as any loop that prints its loss does). The engine's
time includes what it does on top: the checkpoints written every ``--checkpoint-every`` steps and at the end
(model, optimizer, RNG states, atomically, with the JSON sidecar), and the divergence check. The first
``--warmup`` steps are left out of both timings (``torch.cuda.synchronize()`` bounds the timed region on CUDA).
Prints the median samples/s of REPEATS runs of each (run in alternating order, since the machine may be shared),
their ratio (engine / plain), and the checkpoints' share of the engine's time.

Data: digits-cnn and mlp train on scikit-learn's bundled 8x8 digits (1437 training images; synthetic 1x8x8 images
when scikit-learn is missing); resnet18 and resnet50 (torchvision, no downloaded weights) train on synthetic images
of ``--channels`` x ``--image-size`` x ``--image-size``. Needs torch only: Airflow is not imported by the engine
(see the report line ``airflow imported``), so this runs as it is on a GPU machine with torch and torchvision.

Run (from the repository root):
  python bench/bench_training.py --device cpu --repeats 3 --threads 1
  python bench/bench_training.py --device cuda --model resnet18 --batch-size 256 --image-size 64 --steps 200
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from airflow_cloud_paas.services.training.data import synthetic_images  # noqa: E402
from airflow_cloud_paas.services.training.engine import (  # noqa: E402
    Trainer,
    TrainingSpec,
    choose_device,
    choose_precision,
)
from airflow_cloud_paas.services.training.models import build_model  # noqa: E402

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _dataset(args: argparse.Namespace) -> tuple[TensorDataset, str]:
    """Return the training data and a description of it."""
    if args.model in ("digits-cnn", "mlp"):
        if importlib.util.find_spec("sklearn") is not None:
            from airflow_cloud_paas.services.training.data import digits_dataset

            return digits_dataset("train"), "sklearn digits, 1437 x 1x8x8"
        return synthetic_images(1437, 1, 8, 10, seed=0), "synthetic 1437 x 1x8x8 (no scikit-learn)"
    n = args.batch_size * args.distinct_batches
    shape = f"{args.channels}x{args.image_size}x{args.image_size}"
    return synthetic_images(n, args.channels, args.image_size, 10, seed=0), f"synthetic {n} x {shape}"


def _factory(args: argparse.Namespace):
    in_channels = 1 if args.model in ("digits-cnn", "mlp") else args.channels
    image_size = 8 if args.model in ("digits-cnn", "mlp") else args.image_size
    return functools.partial(build_model, args.model, 10, in_channels=in_channels, image_size=image_size)


def _samples(n: int, batch: int, first: int, last: int) -> int:
    """Return the examples trained on in steps first+1 .. last of epochs of n examples (the last batch smaller)."""
    per_epoch = -(-n // batch)
    return sum(n - (per_epoch - 1) * batch if s % per_epoch == 0 else batch for s in range(first + 1, last + 1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_engine(args, dataset, device, precision) -> dict[str, float]:
    """Train with the engine; return its samples/s after the warm-up and the time spent on checkpoints."""
    total = args.warmup + args.steps
    spec = TrainingSpec(
        max_steps=total, batch_size=args.batch_size, learning_rate=args.lr, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every, device=str(device), precision=precision, num_threads=args.threads,
    )
    marks: dict[int, float] = {}

    def on_metrics(step: int, metrics: dict[str, float]) -> None:
        if step == args.warmup:
            _sync(device)
            marks[step] = time.perf_counter()

    folder = Path(tempfile.mkdtemp(prefix="bench_training_"))
    try:
        result = Trainer(_factory(args), dataset, spec, folder, on_metrics=on_metrics).fit()
        _sync(device)
        end = time.perf_counter()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = end - marks[args.warmup]
    samples = _samples(len(dataset), args.batch_size, args.warmup, total)
    return {"samples_per_s": samples / seconds, "seconds": seconds, "checkpoint_seconds": result.checkpoint_seconds,
            "loop_samples_per_s": samples / (seconds - result.checkpoint_seconds), "final_loss": result.loss}


def run_plain(args, dataset, device, precision) -> dict[str, float]:
    """Train with a plain PyTorch loop; return its samples/s after the warm-up."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = _factory(args)().to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    amp_dtype = AMP.get(precision)
    cuda = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, pin_memory=cuda)
    total, step, start = args.warmup + args.steps, 0, 0.0
    while step < total:
        for inputs, targets in loader:
            inputs, targets = inputs.to(device, non_blocking=cuda), targets.to(device, non_blocking=cuda)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            step += 1
            if step % args.log_every == 0:
                last_loss = loss.item()
            if step == args.warmup:
                _sync(device)
                start = time.perf_counter()
            if step == total:
                break
    _sync(device)
    seconds = time.perf_counter() - start
    return {"samples_per_s": _samples(len(dataset), args.batch_size, args.warmup, total) / seconds,
            "seconds": seconds, "final_loss": last_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--model", default="digits-cnn", choices=("digits-cnn", "mlp", "resnet18", "resnet50"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--steps", type=int, default=300, help="timed steps per run (default: 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed first steps, a multiple of --log-every")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each loop; medians are reported")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="engine checkpoints (0: only at the end)")
    parser.add_argument("--log-every", type=int, default=20, help="steps between loss read-backs, in both loops")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--image-size", type=int, default=64, help="synthetic image side for the ResNets")
    parser.add_argument("--channels", type=int, default=3, help="synthetic image channels for the ResNets")
    parser.add_argument("--distinct-batches", type=int, default=16, help="synthetic data size, in batches")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.warmup < args.log_every or args.warmup % args.log_every:
        parser.error("--warmup must be a positive multiple of --log-every (the engine reports at those steps)")
    if args.threads:
        torch.set_num_threads(args.threads)

    probe = TrainingSpec(device=args.device, precision=args.precision).validate()
    device = choose_device(probe)
    precision = choose_precision(device, probe)
    dataset, described = _dataset(args)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
    print(f"model {args.model}, data {described}, batch {args.batch_size}, device {device} ({name}), precision "
          f"{precision}, torch {torch.__version__}, airflow imported: {'airflow' in sys.modules}")
    print(f"{args.steps} timed steps after {args.warmup} warm-up steps, {args.repeats} repeats, engine checkpoint "
          f"every {args.checkpoint_every or 'end only'}")

    engine, plain = [], []
    for i in range(args.repeats):
        order = (("engine", run_engine, engine), ("plain", run_plain, plain))
        for label, run, out in order if i % 2 == 0 else order[::-1]:
            out.append(run(args, dataset, device, precision))
            print(f"  repeat {i + 1} {label:6s} {out[-1]['samples_per_s']:10.1f} samples/s  "
                  f"({out[-1]['seconds']:.3f} s, final loss {out[-1]['final_loss']:.4f})", flush=True)

    ours = statistics.median(r["samples_per_s"] for r in engine)
    theirs = statistics.median(r["samples_per_s"] for r in plain)
    loop = statistics.median(r["loop_samples_per_s"] for r in engine)
    checkpoint_s = statistics.median(r["checkpoint_seconds"] for r in engine)
    engine_s = statistics.median(r["seconds"] for r in engine)
    total, every = args.warmup + args.steps, args.checkpoint_every
    checkpoints = total // every + (total % every != 0) if every else 1
    figures = {
        "model": args.model, "data": described, "device": str(device), "device_name": name, "precision": precision,
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "checkpoint_every": args.checkpoint_every, "torch": torch.__version__,
        "engine_samples_per_s": ours, "plain_samples_per_s": theirs, "ratio": ours / theirs,
        "engine_loop_samples_per_s": loop, "loop_ratio": loop / theirs,
        "engine_checkpoints": checkpoints,
        "engine_checkpoint_seconds": checkpoint_s, "engine_checkpoint_share": checkpoint_s / engine_s,
        "engine_runs": engine, "plain_runs": plain,
    }
    print(f"engine {ours:10.1f} samples/s (median)")
    print(f"plain  {theirs:10.1f} samples/s (median)")
    print(f"ratio  {ours / theirs:10.3f} (engine / plain; target >= 0.95)")
    print(f"engine checkpoints: {figures['engine_checkpoints']} per run, {checkpoint_s:.3f} s "
          f"({100 * figures['engine_checkpoint_share']:.1f}% of its timed run; median)")
    print(f"ratio without the loop's checkpoint time: {loop / theirs:.3f} (the write itself runs on a thread)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
