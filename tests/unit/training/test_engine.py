"""The training engine on CPU, for real: digits are learnt, a killed training resumes bit-for-bit, divergence stops.

Every test trains a real model on scikit-learn's bundled digits with one torch thread; the killed-task test runs
the training in a child process of the same interpreter and kills it with SIGKILL after its first checkpoints.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="pip install torch==2.13.0 (the ml extra)")
pytest.importorskip("sklearn", reason="pip install scikit-learn (the digits ship with it)")

from torch import nn  # noqa: E402

from airflow_cloud_paas.services.training.data import digits_dataset, npz_dataset, synthetic_images  # noqa: E402
from airflow_cloud_paas.services.training.engine import (  # noqa: E402
    SIDECAR_NAME,
    Trainer,
    TrainingSpec,
    choose_device,
    choose_precision,
    evaluate,
    load_checkpoint,
    train,
)
from airflow_cloud_paas.services.training.errors import (  # noqa: E402
    CheckpointError,
    TrainingConfigError,
    TrainingDataError,
    TrainingDivergedError,
)
from airflow_cloud_paas.services.training.models import DigitsCNN, build_model, torchvision_available  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
DIGITS_CNN = functools.partial(build_model, "digits-cnn")
# 1437 training digits in batches of 32: 45 steps an epoch, so 60 steps cross an epoch boundary
# device cpu: bit-for-bit equality holds there (on CUDA, atomics in cuDNN's backward make weights differ by ulps)
SPEC = {"batch_size": 32, "learning_rate": 3e-3, "num_threads": 1, "log_every": 1, "device": "cpu"}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits_train():
    return digits_dataset("train")


def _losses() -> tuple[dict[int, float], Callable[[int, dict[str, float]], None]]:
    seen: dict[int, float] = {}
    return seen, lambda step, metrics: seen.__setitem__(step, metrics["loss"])


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differing = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differing, f"weights differ: {differing}"


CHILD = textwrap.dedent("""
    import functools, sys, torch
    torch.set_num_threads(1)
    from airflow_cloud_paas.services.training.data import digits_dataset
    from airflow_cloud_paas.services.training.engine import TrainingSpec, train
    from airflow_cloud_paas.services.training.models import build_model
    spec = TrainingSpec(max_steps=1_000_000, checkpoint_every=int(sys.argv[2]), batch_size=32, learning_rate=3e-3,
                        num_threads=1, log_every=1000, device="cpu")
    train(functools.partial(build_model, "digits-cnn"), digits_dataset("train"), spec, sys.argv[1])
""")


def _kill_after_checkpoint(checkpoint_dir: Path, every: int, at_least: int, deadline_s: float = 120.0) -> int:
    """Train in a child process, SIGKILL it once last.json shows a step >= at_least; return that sidecar's step."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(checkpoint_dir), str(every)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sidecar = checkpoint_dir / SIDECAR_NAME
    deadline = time.monotonic() + deadline_s
    try:
        while True:
            if sidecar.exists() and json.loads(sidecar.read_text())["step"] >= at_least:
                break
            if child.poll() is not None:
                pytest.fail(f"the training child exited ({child.returncode}) before a checkpoint at step >= "
                            f"{at_least}: {child.stdout.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint at step >= {at_least} after {deadline_s:.0f} s")
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    return json.loads(sidecar.read_text())["step"]


# --- (a) + (b): a killed task resumes where its checkpoint left off, and ends as if never killed ------------------
def test_killed_training_resumes_from_its_checkpoint(tmp_path, digits_train):
    every = 7  # not a divisor of the 45 steps an epoch: checkpoints fall mid-epoch
    killed_dir = tmp_path / "killed"
    _kill_after_checkpoint(killed_dir, every, at_least=2 * every)
    checkpoint = load_checkpoint(killed_dir / "last.pt")
    saved_step, saved_loss = checkpoint["step"], checkpoint["loss"]
    assert saved_step >= 2 * every and saved_step % every == 0
    assert json.loads((killed_dir / SIDECAR_NAME).read_text())["step"] == saved_step
    max_steps = saved_step + 50  # far enough to cross at least one epoch boundary after the resume

    resumed_losses, on_metrics = _losses()
    trainer = Trainer(DIGITS_CNN, digits_train, TrainingSpec(max_steps=max_steps, checkpoint_every=every, **SPEC),
                      killed_dir, on_metrics=on_metrics)
    result = trainer.fit()
    assert result.resumed_from == saved_step
    assert min(resumed_losses) == saved_step + 1, "the step count restarted instead of continuing"
    assert result.step == max_steps and max(resumed_losses) == max_steps
    assert load_checkpoint(result.checkpoint)["step"] == max_steps

    fresh_losses, on_metrics = _losses()
    fresh = Trainer(DIGITS_CNN, digits_train, TrainingSpec(max_steps=max_steps, checkpoint_every=every, **SPEC),
                    tmp_path / "fresh", on_metrics=on_metrics)
    fresh.fit()
    first_resumed, untrained = resumed_losses[saved_step + 1], fresh_losses[1]
    assert untrained > 2.0  # ~ln(10) for 10 classes
    assert abs(first_resumed - saved_loss) < abs(first_resumed - untrained), (
        f"the loss after the resume ({first_resumed:.3f}) is nearer an untrained model's ({untrained:.3f}) than the "
        f"checkpoint's ({saved_loss:.3f})")
    # (b) the killed-and-resumed training ends with the uninterrupted one's weights, bit for bit (CPU, one thread)
    assert resumed_losses[max_steps] == fresh_losses[max_steps]
    _assert_same_weights(trainer.model.state_dict(), fresh.model.state_dict())


def test_resume_mid_epoch_gives_the_same_weights_as_one_run(tmp_path, digits_train):
    spec = {**SPEC, "checkpoint_every": 0}
    stopped = train(DIGITS_CNN, digits_train, TrainingSpec(max_steps=31, **spec), tmp_path / "twice")
    assert (stopped.step, stopped.epoch) == (31, 0)
    assert load_checkpoint(stopped.checkpoint)["position"] == 31
    # a changed learning rate is allowed on a resume (the fix after a divergence), so give the same one here
    resumed = Trainer(DIGITS_CNN, digits_train, TrainingSpec(max_steps=100, **spec), tmp_path / "twice")
    result = resumed.fit()
    assert (result.resumed_from, result.step, result.epoch) == (31, 100, 2)

    once = Trainer(DIGITS_CNN, digits_train, TrainingSpec(max_steps=100, **spec), tmp_path / "once")
    assert once.fit().loss == result.loss
    _assert_same_weights(resumed.model.state_dict(), once.model.state_dict())
    _assert_same_weights(load_checkpoint(result.checkpoint)["model"], once.model.state_dict())


def test_resume_with_nothing_left_to_do_keeps_the_checkpoint(tmp_path, digits_train):
    spec = TrainingSpec(max_steps=5, **SPEC)
    first = train(DIGITS_CNN, digits_train, spec, tmp_path)
    written = first.checkpoint.stat().st_mtime_ns
    again = train(DIGITS_CNN, digits_train, spec, tmp_path)
    assert (again.resumed_from, again.step, again.loss) == (5, 5, first.loss)
    assert first.checkpoint.stat().st_mtime_ns == written


# --- (c) divergence ---------------------------------------------------------------------------------------------
class NaNAfter(nn.Module):
    """A DigitsCNN whose logits turn NaN from its ``after``-th training forward pass on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = DigitsCNN(), after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += self.training
        logits = self.inner(x)
        return logits * float("nan") if self.calls >= self.after else logits


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, digits_train):
    # log_every is large: the NaN of step 13 is seen at the checkpoint sync of step 15, before anything is written
    spec = TrainingSpec(max_steps=40, checkpoint_every=5, **{**SPEC, "log_every": 100})
    with pytest.raises(TrainingDivergedError) as raised:
        train(lambda: NaNAfter(13), digits_train, spec, tmp_path)
    err = raised.value
    assert (err.step, math.isnan(err.loss), err.checkpoint_step) == (13, True, 10)
    assert err.checkpoint == str(tmp_path / "last.pt") and "lower learning_rate" in str(err)
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["step"] == 10 and math.isfinite(kept["loss"])
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())
    assert json.loads((tmp_path / SIDECAR_NAME).read_text())["step"] == 10
    assert not list(tmp_path.glob(".*.tmp")), "a temporary checkpoint was left behind"


def test_huge_learning_rate_diverges(tmp_path, digits_train):
    spec = TrainingSpec(max_steps=40, checkpoint_every=20, optimizer="sgd", **{**SPEC, "learning_rate": 1e6})
    with pytest.raises(TrainingDivergedError) as raised:
        train(DIGITS_CNN, digits_train, spec, tmp_path)
    assert raised.value.step < 20 and raised.value.checkpoint is None
    assert not (tmp_path / "last.pt").exists()


# --- (d) arguments ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("batch_size", 0, "batch_size=0: must be an integer >= 1"),
        ("batch_size", 2.5, "must be an integer >= 1"),
        ("epochs", True, "must be an integer >= 1"),
        ("max_steps", 0, "max_steps=0: must be an integer >= 1"),
        ("learning_rate", 0.0, "learning_rate=0.0: must be a number > 0.0"),
        ("learning_rate", float("nan"), "finite"),
        ("optimizer", "adam", "optimizer='adam': must be one of adamw, sgd"),
        ("precision", "fp8", "one of auto, fp32, bf16, fp16"),
        ("device", "tpu", "device='tpu': must be auto, cpu, cuda or cuda:N"),
        ("checkpoint_every", -1, "checkpoint_every=-1: must be an integer >= 0"),
        ("num_threads", 0, "num_threads=0: must be an integer >= 1"),
    ],
)
def test_bad_spec_field_is_named(field, value, says):
    with pytest.raises(TrainingConfigError) as raised:
        TrainingSpec(**{field: value}).validate()
    assert raised.value.field == field and says in str(raised.value)


def test_spec_schema_describes_every_field_and_from_dict_refuses_unknown_names():
    schema = TrainingSpec.schema()
    assert schema["batch_size"] == {"type": "integer", "default": 32, "minimum": 1,
                                    "description": "Examples per optimizer step."}
    assert schema["max_steps"]["type"] == ["integer", "null"]
    assert schema["precision"]["enum"] == ["auto", "fp32", "bf16", "fp16"]
    assert all(entry["description"] for entry in schema.values())
    assert TrainingSpec.from_dict({name: e["default"] for name, e in schema.items()}) == TrainingSpec()
    with pytest.raises(TrainingConfigError, match="batch"):
        TrainingSpec.from_dict({"batchsize": 4})


# --- (e) checkpoints that do not fit ----------------------------------------------------------------------------
def test_incompatible_checkpoint_names_the_path_and_the_difference(tmp_path, digits_train):
    train(DIGITS_CNN, digits_train, TrainingSpec(max_steps=3, **SPEC), tmp_path)
    with pytest.raises(CheckpointError) as raised:
        train(DIGITS_CNN, digits_train, TrainingSpec(max_steps=6, **{**SPEC, "batch_size": 16}), tmp_path)
    assert raised.value.path == str(tmp_path / "last.pt")
    assert "batch_size: checkpoint has 32, this run 16" in str(raised.value)
    with pytest.raises(CheckpointError, match="model: checkpoint has .*DigitsCNN.*MLP"):
        train(functools.partial(build_model, "mlp"), digits_train, TrainingSpec(max_steps=6, **SPEC), tmp_path)


def test_corrupt_checkpoint_is_refused(tmp_path, digits_train):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as raised:
        train(DIGITS_CNN, digits_train, TrainingSpec(max_steps=3, **SPEC), tmp_path)
    assert raised.value.path == str(tmp_path / "last.pt") and "delete it to start afresh" in str(raised.value)
    torch.save({"step": 3}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "last.pt")


def test_failed_checkpoint_write_is_a_checkpoint_error(tmp_path, digits_train, monkeypatch):
    def full_disk(obj, f):  # the narrowest stand-in for a full disk: torch.save's write fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device") as raised:
        train(DIGITS_CNN, digits_train, TrainingSpec(max_steps=4, checkpoint_every=2, **SPEC), tmp_path)
    assert raised.value.path == str(tmp_path / "last.pt")
    assert not (tmp_path / "last.pt").exists() and not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(TrainingConfigError) as raised:
        Trainer(DIGITS_CNN, digits_train, TrainingSpec(), tmp_path / "a-file" / "checkpoints")
    assert raised.value.field == "checkpoint_dir"


# --- (f) the model really learns ----------------------------------------------------------------------------------
def test_evaluate_after_short_training_beats_80_percent(tmp_path, digits_train):
    holdout = digits_dataset("holdout")
    assert len(holdout) + len(digits_train) == 1797
    trainer = Trainer(DIGITS_CNN, digits_train, TrainingSpec(max_steps=60, **SPEC), tmp_path)
    torch.manual_seed(0)
    before = evaluate(DIGITS_CNN(), holdout)
    result = trainer.fit()
    after = evaluate(trainer.model, holdout, device="cpu")
    assert before.accuracy < 0.3 and after.accuracy > 0.8, (before, after)
    assert after.loss < before.loss and after.samples == len(holdout)
    assert result.samples_per_s > 0 and result.checkpoint_seconds <= result.train_seconds


# --- (g) device and precision ---------------------------------------------------------------------------------------
def test_choose_device_and_precision_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device = choose_device(TrainingSpec())
    assert device == torch.device("cpu")
    assert choose_precision(device, TrainingSpec()) == "fp32"
    assert choose_precision(device, TrainingSpec(precision="bf16")) == "bf16"
    with pytest.raises(TrainingConfigError, match="fp16 needs a CUDA device") as raised:
        choose_precision(device, TrainingSpec(precision="fp16"))
    assert raised.value.field == "precision"
    with pytest.raises(TrainingConfigError, match="no CUDA device") as raised:
        choose_device(TrainingSpec(device="cuda"))
    assert raised.value.field == "device"


def test_bf16_autocast_trains_on_cpu(tmp_path, digits_train):
    result = train(DIGITS_CNN, digits_train, TrainingSpec(max_steps=20, precision="bf16", **SPEC),
                   tmp_path)
    assert result.precision == "bf16" and result.device == "cpu" and math.isfinite(result.loss)


# --- models and data ------------------------------------------------------------------------------------------------
def test_build_model_names():
    x = torch.zeros(2, 1, 8, 8)
    assert build_model("digits-cnn")(x).shape == (2, 10) and build_model("mlp", 3)(x).shape == (2, 3)
    with pytest.raises(TrainingConfigError, match="unknown model 'vgg'") as raised:
        build_model("vgg")
    assert raised.value.field == "model"
    if torchvision_available():
        assert build_model("resnet18", 10, in_channels=3)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    else:
        with pytest.raises(TrainingConfigError, match="resnet18 needs torchvision"):
            build_model("resnet18")


def test_synthetic_images_are_deterministic():
    a, b = synthetic_images(16, 3, 12, 4, seed=1), synthetic_images(16, 3, 12, 4, seed=1)
    assert a.tensors[0].shape == (16, 3, 12, 12)
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert int(a.tensors[1].max()) < 4 and a.tensors[1].dtype == torch.int64


def test_npz_folder_loads_and_names_bad_arrays(tmp_path):
    np = pytest.importorskip("numpy")
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 8, 8), np.uint8) + 255, y=np.arange(4))
    np.savez(tmp_path / "b.npz", x=np.ones((2, 1, 8, 8), np.float32), y=np.array([1, 2]))
    data = npz_dataset(tmp_path, num_classes=10)
    assert data.tensors[0].shape == (6, 1, 8, 8) and data.tensors[0].dtype == torch.float32
    assert float(data.tensors[0].max()) == 1.0 and data.tensors[1].tolist() == [0, 1, 2, 3, 1, 2]

    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "c.npz", x=np.zeros((4, 8), np.float32), y=np.arange(4))
    with pytest.raises(TrainingDataError) as raised:
        npz_dataset(bad)
    assert raised.value.array == "x" and "N x C x H x W" in str(raised.value) and "c.npz" in str(raised.value)
    np.savez(bad / "c.npz", x=np.zeros((4, 8, 8), np.float32), y=np.arange(3))
    with pytest.raises(TrainingDataError, match=r"array 'y': expected shape \(4,\)"):
        npz_dataset(bad)
    np.savez(bad / "c.npz", x=np.zeros((4, 8, 8), np.float32), y=np.arange(4.0))
    with pytest.raises(TrainingDataError, match="integer class labels"):
        npz_dataset(bad)
    np.savez(bad / "c.npz", images=np.zeros((4, 8, 8), np.float32))
    with pytest.raises(TrainingDataError, match="save the images as 'x'"):
        npz_dataset(bad)
    with pytest.raises(TrainingDataError, match="no such file"):
        npz_dataset(tmp_path / "missing")
