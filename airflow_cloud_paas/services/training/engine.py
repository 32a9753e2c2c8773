"""The training engine of DEEP as a Service: a plain PyTorch loop that checkpoints, resumes and stops on divergence.

:class:`Trainer` runs a classification training described by a :class:`TrainingSpec`. It writes
``checkpoint_dir/last.pt`` (model, optimizer, grad scaler, RNG states, step, epoch and position in the epoch, last
loss) every ``checkpoint_every`` steps and at the end, atomically, with a small ``last.json`` beside it for people and
tools. Started again on the same ``checkpoint_dir`` it resumes where the checkpoint left off: the step count, the
data order (each epoch's order depends only on the seed and the epoch, and the batches already consumed are
skipped) and the loss continue. A NaN or infinite loss stops the training with :class:`TrainingDivergedError`
before anything overwrites the last good checkpoint.

The hot loop never waits for the device: losses stay on it and are read back (one sync) only at logging and
checkpoint steps, where ``on_metrics`` is called and finiteness is checked.

Checkpoints are written on a background thread from a copy of the state on the CPU, one at a time, so that the
training does not wait for the disk; ``fit()`` returns (or raises) only once the last one is written.

This module imports torch but not Airflow, so the benchmark and a GPU worker can run it without an Airflow install.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from airflow_cloud_paas.services.training.errors import CheckpointError, TrainingConfigError, TrainingDivergedError

#: the version of the checkpoint layout; a checkpoint of another version is refused
CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "last.pt"
SIDECAR_NAME = "last.json"

MetricsCallback = Callable[[int, dict[str, float]], None]


def _arg(default: Any, description: str, *, minimum: float | None = None, exclusive_minimum: float | None = None,
         enum: tuple[Any, ...] | None = None, nullable: bool = False) -> Any:
    """Return a dataclass field whose metadata describes the argument (read by validate() and schema())."""
    meta = {"description": description, "minimum": minimum, "exclusive_minimum": exclusive_minimum, "enum": enum,
            "nullable": nullable}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


@dataclass
class TrainingSpec:
    """Describe one training: how long, how big the batches, how fast, where and at which precision.

    :param epochs: the passes over the training set (ignored when ``max_steps`` is given)
    :param max_steps: the total number of optimizer steps, counted across resumes
    :param batch_size: the examples per step
    :param learning_rate: the optimizer's learning rate
    :param optimizer: ``adamw`` or ``sgd`` (with Nesterov momentum)
    :param weight_decay: the decoupled weight decay (adamw) or L2 penalty (sgd)
    :param momentum: the momentum of sgd
    :param checkpoint_every: write ``last.pt`` every so many steps (0: only at the end)
    :param log_every: call ``on_metrics`` every so many steps
    :param seed: the seed of the initial weights, the data order and dropout
    :param device: ``auto`` (CUDA when present), ``cpu`` or ``cuda`` / ``cuda:N``
    :param precision: ``auto`` (bf16 on a CUDA device that supports it, else fp32), ``fp32``, ``bf16`` or ``fp16``
    :param num_threads: the CPU threads torch may use (None: torch's default)
    :param num_workers: the DataLoader's worker processes (0: load in the training process)
    """

    epochs: int = _arg(1, "Passes over the training set; ignored when max_steps is given.", minimum=1)
    max_steps: int | None = _arg(None, "Total optimizer steps, counted across resumes (overrides epochs).",
                                 minimum=1, nullable=True)
    batch_size: int = _arg(32, "Examples per optimizer step.", minimum=1)
    learning_rate: float = _arg(1e-3, "Learning rate of the optimizer.", exclusive_minimum=0.0)
    optimizer: str = _arg("adamw", "Optimizer: AdamW, or SGD with Nesterov momentum.", enum=("adamw", "sgd"))
    weight_decay: float = _arg(0.01, "Weight decay (decoupled for adamw).", minimum=0.0)
    momentum: float = _arg(0.9, "Momentum of sgd.", minimum=0.0)
    checkpoint_every: int = _arg(100, "Write the checkpoint every so many steps (0: only at the end).", minimum=0)
    log_every: int = _arg(50, "Report loss, learning rate and samples/s every so many steps.", minimum=1)
    seed: int = _arg(0, "Seed of the initial weights, the data order and dropout.", minimum=0)
    device: str = _arg("auto", "Device: auto (CUDA when present), cpu, cuda or cuda:N.")
    precision: str = _arg("auto", "Precision: auto (bf16 on CUDA when supported, else fp32), fp32, bf16 or fp16.",
                          enum=("auto", "fp32", "bf16", "fp16"))
    num_threads: int | None = _arg(None, "CPU threads torch may use (default: torch's own).", minimum=1,
                                   nullable=True)
    num_workers: int = _arg(0, "DataLoader worker processes (0: load in the training process).", minimum=0)

    _TYPES: ClassVar[dict[str, tuple[str, tuple[type, ...]]]] = {
        "int": ("integer", (int,)), "float": ("number", (int, float)), "str": ("string", (str,)),
    }

    def validate(self) -> TrainingSpec:
        """Check every field against its type and range; return the spec, or raise :class:`TrainingConfigError`."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None and meta.get("nullable"):
                continue
            kind, types = self._TYPES[_base_type(f.type)]
            # bool is an int to Python, never a valid count or rate here
            if isinstance(value, bool) or not isinstance(value, types):
                raise TrainingConfigError(f"must be {_describe(kind, meta)}", field=f.name,
                                          value=value)
            if ("enum" in meta and value not in meta["enum"]) or ("minimum" in meta and value < meta["minimum"]) or (
                    "exclusive_minimum" in meta and value <= meta["exclusive_minimum"]):
                raise TrainingConfigError(f"must be {_describe(kind, meta)}", field=f.name,
                                          value=value)
            if kind == "number" and not math.isfinite(value):
                raise TrainingConfigError("must be a finite number", field=f.name, value=value)
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise TrainingConfigError("must be auto, cpu, cuda or cuda:N", field="device",
                                      value=self.device)
        return self

    @classmethod
    def schema(cls) -> dict[str, dict[str, Any]]:
        """Return each argument's JSON-schema description: type, default, range or choices, and what it does."""
        out: dict[str, dict[str, Any]] = {}
        for f in dataclasses.fields(cls):
            kind, _ = cls._TYPES[_base_type(f.type)]
            meta = f.metadata
            entry: dict[str, Any] = {"type": [kind, "null"] if meta.get("nullable") else kind, "default": f.default}
            for key, name in (("minimum", "minimum"), ("exclusive_minimum", "exclusiveMinimum"), ("enum", "enum")):
                if key in meta:
                    entry[name] = list(meta[key]) if key == "enum" else meta[key]
            entry["description"] = meta["description"]
            out[f.name] = entry
        return out

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> TrainingSpec:
        """Build and validate a spec from arguments (as the DEEPaaS API receives them); unknown names are refused.

        :param args: field name -> value
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise TrainingConfigError(f"unknown argument; the arguments are {', '.join(sorted(known))}",
                                      field=unknown[0], value=args[unknown[0]])
        return cls(**args).validate()


def _base_type(annotation: Any) -> str:
    """Return ``int``, ``float`` or ``str`` for a field annotation such as ``'int | None'``."""
    return str(annotation).split("|")[0].strip()


def _describe(kind: str, meta: Any) -> str:
    if "enum" in meta:
        return "one of " + ", ".join(map(str, meta["enum"]))
    article = "an" if kind == "integer" else "a"
    if "minimum" in meta:
        return f"{article} {kind} >= {meta['minimum']}"
    if "exclusive_minimum" in meta:
        return f"{article} {kind} > {meta['exclusive_minimum']}"
    return f"{article} {kind}"


def choose_device(spec: TrainingSpec) -> torch.device:
    """Return the device to train on: CUDA when present for ``auto``; refuse a CUDA device that is not there.

    :param spec: the training spec (its ``device``)
    """
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingConfigError("no CUDA device is available here; use auto or cpu", field="device",
                                      value=spec.device)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainingConfigError(f"only {torch.cuda.device_count()} CUDA device(s) here", field="device",
                                      value=spec.device)
    return device


def choose_precision(device: torch.device, spec: TrainingSpec) -> str:
    """Return ``fp32``, ``bf16`` or ``fp16``: for ``auto``, bf16 on a CUDA device that supports it, else fp32.

    :param device: the device chosen by :func:`choose_device`
    :param spec: the training spec (its ``precision``)
    """
    requested = spec.precision
    if requested == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise TrainingConfigError("fp16 needs a CUDA device; use bf16 or fp32 on the CPU", field="precision",
                                  value=requested)
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrainingConfigError(f"{torch.cuda.get_device_name(device)} does not support bf16; use fp16 or fp32",
                                  field="precision", value=requested)
    return requested


_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainingResult:
    """What a training run did.

    :param step: the final step, counted across resumes
    :param loss: the loss of the final step
    :param train_seconds: this run's wall time from its first step to its final checkpoint written
    :param samples_per_s: the examples this run trained on per second of ``train_seconds``
    :param checkpoint: the final checkpoint
    :param device: the device trained on
    :param precision: ``fp32``, ``bf16`` or ``fp16``
    :param resumed_from: the step of the checkpoint this run resumed from, or None for a fresh start
    :param epoch: the epoch the final step belongs to (0-based; the number of completed epochs when it ended one)
    :param checkpoint_seconds: the part of ``train_seconds`` the loop spent on checkpoints: copying the state to
        the CPU, and waiting for a write still in flight (files are written on a background thread)
    """

    step: int
    loss: float
    train_seconds: float
    samples_per_s: float
    checkpoint: Path
    device: str
    precision: str
    resumed_from: int | None
    epoch: int
    checkpoint_seconds: float


@dataclass(frozen=True)
class EvaluationResult:
    """How a model does on a data set.

    :param accuracy: the share of examples whose top class is the label
    :param loss: the mean cross-entropy
    :param samples: the number of examples
    """

    accuracy: float
    loss: float
    samples: int


class Trainer:
    """Train a classifier, checkpointing to and resuming from ``checkpoint_dir/last.pt``.

    One training at a time may use a ``checkpoint_dir``: a new one removes the temporary files a killed one left.

    :param model_factory: returns a fresh, untrained model (called once, after seeding)
    :param dataset_train: the training examples: (input, int64 label) pairs
    :param spec: the training spec (validated here)
    :param checkpoint_dir: the folder of ``last.pt`` and ``last.json`` (created when missing)
    :param on_metrics: called as ``on_metrics(step, metrics)`` every ``spec.log_every`` steps and at the end, with
        ``loss`` (mean since the last call), ``lr``, ``samples_per_s`` (since the last call) and ``epoch``
    """

    def __init__(
        self, model_factory: Callable[[], nn.Module], dataset_train: Dataset, spec: TrainingSpec,
        checkpoint_dir: str | Path, on_metrics: MetricsCallback | None = None,
    ) -> None:
        self.spec = spec.validate()
        self.model_factory = model_factory
        self.dataset = dataset_train
        self.checkpoint_dir = Path(checkpoint_dir)
        self.checkpoint_path = self.checkpoint_dir / CHECKPOINT_NAME
        self.on_metrics = on_metrics
        self.device = choose_device(spec)
        self.precision = choose_precision(self.device, spec)
        try:
            self.dataset_size = len(dataset_train)  # type: ignore[arg-type]
        except TypeError as err:
            raise TrainingConfigError("the training set must have a length (a map-style Dataset)",
                                      field="dataset_train") from err
        if self.dataset_size == 0:
            raise TrainingConfigError("the training set is empty", field="dataset_train", value=0)
        self.steps_per_epoch = math.ceil(self.dataset_size / spec.batch_size)
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrainingConfigError(f"cannot be used as a folder ({err}); give a writable folder",
                                      field="checkpoint_dir", value=str(checkpoint_dir)) from err
        self.model: nn.Module | None = None

    # --- the loop ------------------------------------------------------------------------------------------
    def fit(self) -> TrainingResult:
        """Train until ``max_steps`` (or ``epochs``), resuming from ``last.pt`` when there is one; return the result."""
        spec, device = self.spec, self.device
        if spec.num_threads is not None:
            torch.set_num_threads(spec.num_threads)
        torch.manual_seed(spec.seed)  # the initial weights (and dropout until a checkpoint restores the RNG)
        model = self.model_factory().to(device)
        self.model = model
        optimizer = self._optimizer(model)
        scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        state = _LoopState()
        resumed_from = None
        for stale in self.checkpoint_dir.glob(".last.*.tmp"):  # left by a run killed while writing
            stale.unlink(missing_ok=True)
        if self.checkpoint_path.exists():
            self._restore(model, optimizer, scaler, state)
            resumed_from = state.step
        total_steps = spec.max_steps if spec.max_steps is not None else spec.epochs * self.steps_per_epoch
        amp_dtype = _AMP_DTYPES.get(self.precision)
        non_blocking = device.type == "cuda"
        model.train()

        started = last_report = time.perf_counter()
        checkpoint_seconds = 0.0
        samples = samples_since_report = 0
        window: list[torch.Tensor] = []  # the losses since the last sync, still on the device
        window_start = state.step
        checkpointed = state.step if resumed_from is not None else None
        writer = _CheckpointWriter(self.checkpoint_path)
        try:
            while state.step < total_steps:
                for inputs, targets in self._batches(state.epoch, state.position):
                    inputs = inputs.to(device, non_blocking=non_blocking)
                    targets = targets.to(device, non_blocking=non_blocking)
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
                    state.step += 1
                    state.position += 1
                    batch = targets.shape[0]
                    samples += batch
                    samples_since_report += batch
                    window.append(loss.detach())
                    if state.position == self.steps_per_epoch:
                        state.epoch, state.position = state.epoch + 1, 0
                    log_now = state.step % spec.log_every == 0
                    checkpoint_now = spec.checkpoint_every and state.step % spec.checkpoint_every == 0
                    last = state.step >= total_steps
                    if log_now or checkpoint_now or last:
                        losses = self._check_window(window, window_start, checkpointed)
                        state.loss = losses[-1]
                        if log_now or last:
                            now = time.perf_counter()
                            if self.on_metrics is not None:
                                self.on_metrics(state.step, {
                                    "loss": sum(losses) / len(losses), "lr": optimizer.param_groups[0]["lr"],
                                    "samples_per_s": samples_since_report / max(now - last_report, 1e-9),
                                    "epoch": float(state.epoch),
                                })
                            last_report, samples_since_report = now, 0
                        window, window_start = [], state.step
                        if checkpoint_now or last:
                            t0 = time.perf_counter()
                            writer.submit(*self._snapshot(model, optimizer, scaler, state))
                            checkpoint_seconds += time.perf_counter() - t0
                            checkpointed = state.step
                    if last:
                        break
            t0 = time.perf_counter()
            writer.wait()  # the final checkpoint is on disk before fit() returns
            checkpoint_seconds += time.perf_counter() - t0
        except BaseException as err:
            writer.wait_after(err)  # a write in flight finishes, so the last good checkpoint is whole
            raise
        elapsed = time.perf_counter() - started
        return TrainingResult(
            step=state.step, loss=state.loss, train_seconds=elapsed, samples_per_s=samples / max(elapsed, 1e-9),
            checkpoint=self.checkpoint_path, device=str(device), precision=self.precision, resumed_from=resumed_from,
            epoch=state.epoch, checkpoint_seconds=checkpoint_seconds,
        )

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        spec = self.spec
        if spec.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=spec.learning_rate, momentum=spec.momentum,
                                   weight_decay=spec.weight_decay, nesterov=spec.momentum > 0)
        return torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)

    def _batches(self, epoch: int, skip: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of ``epoch`` after the first ``skip``: the order depends only on the seed and epoch."""
        order = torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(self.spec.seed + epoch))
        indices = order[skip * self.spec.batch_size:].tolist()
        # an own generator: otherwise each new DataLoader iterator draws its worker seed from the global RNG, and
        # a resumed run (one more iterator) would get other dropout masks than an uninterrupted one
        loader = DataLoader(self.dataset, batch_size=self.spec.batch_size, sampler=indices,
                            num_workers=self.spec.num_workers, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.spec.seed + epoch))
        yield from loader

    def _check_window(self, window: list[torch.Tensor], first_step: int, checkpointed: int | None) -> list[float]:
        """Return the losses of the steps since the last sync (one device sync); raise if one is not finite."""
        losses = torch.stack(window).float().tolist()
        for offset, value in enumerate(losses):
            if not math.isfinite(value):
                hint = f"lower learning_rate (now {self.spec.learning_rate:g})"
                if self.precision == "fp16":
                    hint += " or use precision bf16 or fp32"
                raise TrainingDivergedError(
                    first_step + offset + 1, value, checkpoint=self.checkpoint_path if checkpointed else None,
                    checkpoint_step=checkpointed, hint=hint)
        return losses

    # --- checkpoints ---------------------------------------------------------------------------------------
    def fingerprint(self, model: nn.Module) -> dict[str, Any]:
        """Return what a checkpoint must share with this run to be resumed: model, data order and optimizer kind.

        The learning rate, weight decay and momentum may change between runs (lowering the learning rate after a
        divergence is the usual fix); the step limits, logging and device may too.

        :param model: the model being trained
        """
        cls = type(model)
        return {
            "model": f"{cls.__module__}.{cls.__qualname__}", "dataset_size": self.dataset_size,
            "batch_size": self.spec.batch_size, "seed": self.spec.seed, "optimizer": self.spec.optimizer,
        }

    def _snapshot(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
        state: _LoopState,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return a checkpoint and its sidecar, every tensor copied to the CPU, so that training can go on."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        now = time.time()
        checkpoint = {
            "format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint(model),
            "model": _to_cpu(model.state_dict()), "optimizer": _to_cpu(optimizer.state_dict()),
            "scaler": None if scaler is None else scaler.state_dict(), "rng": rng,
            "step": state.step, "epoch": state.epoch, "position": state.position, "loss": state.loss,
            "precision": self.precision, "time": now,
        }
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the non-blocking copies of _to_cpu are complete
        sidecar = {"step": state.step, "epoch": state.epoch, "position": state.position, "loss": state.loss,
                   "time": now, "precision": self.precision, "checkpoint": CHECKPOINT_NAME}
        return checkpoint, sidecar

    def _restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                 state: _LoopState) -> None:
        path = self.checkpoint_path
        checkpoint = load_checkpoint(path, map_location=self.device)
        expected = self.fingerprint(model)
        differs = [f"{key}: checkpoint has {checkpoint['fingerprint'].get(key)!r}, this run {value!r}"
                   for key, value in expected.items() if checkpoint["fingerprint"].get(key) != value]
        if differs:
            raise CheckpointError(
                f"was written by another training ({'; '.join(differs)}); use another checkpoint_dir, or delete the "
                f"checkpoint to start afresh", path=path)
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"does not fit this model or optimizer ({err}); use another checkpoint_dir",
                                  path=path) from err
        for group in optimizer.param_groups:  # this run's hyperparameters win over the checkpoint's
            group["lr"] = self.spec.learning_rate
            group["weight_decay"] = self.spec.weight_decay
            if "momentum" in group:
                group["momentum"] = self.spec.momentum
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"]["torch"].cpu())
        if "cuda" in checkpoint["rng"] and self.device.type == "cuda":
            cuda_states = checkpoint["rng"]["cuda"]
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        state.step, state.epoch, state.position = checkpoint["step"], checkpoint["epoch"], checkpoint["position"]
        state.loss = checkpoint["loss"]


@dataclass
class _LoopState:
    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of the current epoch already trained on
    loss: float = float("nan")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :class:`Trainer`; raise :class:`CheckpointError` when it is broken or foreign.

    :param path: the ``last.pt`` file
    :param map_location: where to load its tensors
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError("does not exist", path=path) from err
    except Exception as err:  # torch.load raises RuntimeError, pickle or zipfile errors, EOFError on a torn file
        raise CheckpointError(
            f"cannot be read ({type(err).__name__}: {err}); delete it to start afresh", path=path) from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"is not a training checkpoint of format {CHECKPOINT_FORMAT} (found {found!r}); use another "
            f"checkpoint_dir, or delete it to start afresh", path=path)
    return checkpoint


def _to_cpu(obj: Any) -> Any:
    """Return a copy of a state dict whose tensors are on the CPU and no longer shared with the training."""
    if isinstance(obj, torch.Tensor):
        if obj.device.type == "cpu":
            return obj.detach().clone()
        return obj.detach().to("cpu", non_blocking=True)  # into pinned memory; the caller synchronizes once
    if isinstance(obj, dict):
        return {key: _to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(value) for value in obj)
    return obj


class _CheckpointWriter:
    """Write checkpoints on a background thread, one at a time, so that the training does not wait for the disk.

    :param path: the checkpoint file (its sidecar is written beside it, after it)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, checkpoint: dict[str, Any], sidecar: dict[str, Any]) -> None:
        """Start writing a snapshot once the previous one is written.

        :param checkpoint: the checkpoint, its tensors on the CPU and owned by it
        :param sidecar: the JSON summary written beside it
        """
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(checkpoint, sidecar), name="checkpoint-writer",
                                        daemon=True)
        self._thread.start()

    def _write(self, checkpoint: dict[str, Any], sidecar: dict[str, Any]) -> None:
        try:
            _atomic_write(self.path, lambda f: torch.save(checkpoint, f))
            _atomic_write(self.path.with_name(SIDECAR_NAME), lambda f: f.write(json.dumps(sidecar).encode()))
        except BaseException as err:  # re-raised on the training thread by wait()
            self._error = err

    def wait(self) -> None:
        """Wait for the write in flight; raise :class:`CheckpointError` when it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(
                f"could not be written ({type(err).__name__}: {err}); check the free space and permissions of "
                f"{self.path.parent}", path=self.path) from err

    def wait_after(self, cause: BaseException) -> None:
        """Wait for the write in flight after ``cause`` stopped the training; a failed write becomes a note on it.

        :param cause: the exception being raised
        """
        try:
            self.wait()
        except CheckpointError as err:
            cause.add_note(str(err))


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write a file through a temporary file in the same folder and os.replace, so that readers never see half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train(
    model_factory: Callable[[], nn.Module], dataset_train: Dataset, spec: TrainingSpec, checkpoint_dir: str | Path,
    on_metrics: MetricsCallback | None = None,
) -> TrainingResult:
    """Train a classifier, resuming from ``checkpoint_dir/last.pt`` when there is one; return the result.

    :param model_factory: returns a fresh, untrained model
    :param dataset_train: the training examples: (input, int64 label) pairs
    :param spec: the training spec
    :param checkpoint_dir: the folder of the checkpoint
    :param on_metrics: called as ``on_metrics(step, metrics)`` every ``spec.log_every`` steps and at the end
    """
    return Trainer(model_factory, dataset_train, spec, checkpoint_dir, on_metrics).fit()


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, device: str | torch.device | None = None, batch_size: int = 512,
) -> EvaluationResult:
    """Return the accuracy and mean cross-entropy of a model on a data set (in eval mode, without gradients).

    :param model: the trained model
    :param dataset: (input, int64 label) pairs, e.g. the held-back split
    :param device: where to evaluate (default: where the model's parameters are)
    :param batch_size: the examples per forward pass
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    loss_sum, count = torch.zeros((), device=device), 0
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for inputs, targets in DataLoader(dataset, batch_size=batch_size, pin_memory=device.type == "cuda"):
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            logits = model(inputs).float()
            loss_sum += F.cross_entropy(logits, targets, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
            count += targets.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise TrainingConfigError("the evaluation set is empty", field="dataset", value=0)
    return EvaluationResult(accuracy=int(correct.item()) / count, loss=float(loss_sum.item()) / count, samples=count)
