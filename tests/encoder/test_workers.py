"""DataLoader workers die with the process that started them, whoever starts them (index builder, training)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from encoder.workers import WorkerInit, die_with_parent

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    pid = os.fork()
    if pid == 0:  # the child: 0 is never its parent's pid, as if the parent had died before prctl
        try:
            die_with_parent(0)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1


def test_the_own_parent_passes(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "_exit", calls.append)
    assert die_with_parent(os.getppid()) is True and calls == []


@pytest.mark.slow
def test_loader_workers_die_when_their_parent_is_sigkilled():
    program = textwrap.dedent("""
        import os, time, torch
        from torch.utils.data import DataLoader, Dataset
        from encoder.workers import WorkerInit

        class Slow(Dataset):
            def __len__(self):
                return 10_000
            def __getitem__(self, i):
                time.sleep(0.05)
                return os.getpid()

        for pid in DataLoader(Slow(), batch_size=1, num_workers=2, worker_init_fn=WorkerInit()):
            print(int(pid), flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", program], env=ENV, stdout=subprocess.PIPE)
    try:
        workers = {int(process.stdout.readline()) for _ in range(6)}
        assert len(workers) == 2 and process.pid not in workers
        process.kill()
        process.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in workers)
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_a_signal_to_the_whole_process_group_is_left_to_the_parent():
    """Ctrl-C or `timeout` signals every process of the group: the workers must not die of it, or the loader raises
    "worker killed by signal" in the parent before its own handler saves where the run stands."""
    program = textwrap.dedent("""
        import os, signal, sys, torch
        from torch.utils.data import DataLoader, Dataset
        from encoder.workers import WorkerInit

        class SignalsItsGroup(Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                if i == 3:  # as the terminal or a scheduler would: every process of the parent's group at once
                    os.killpg(os.getpgid(os.getppid()), signal.SIGTERM)
                return i

        got = []
        try:
            for batch in DataLoader(SignalsItsGroup(), batch_size=1, num_workers=2, worker_init_fn=WorkerInit()):
                got += batch.tolist()
        except KeyboardInterrupt:
            print("parent took it", flush=True)
            sys.exit(3)
    """)
    handler = "import signal\ndef _stop(*_): raise KeyboardInterrupt\nsignal.signal(signal.SIGTERM, _stop)\n"
    result = subprocess.run([sys.executable, "-c", handler + program], env=ENV, capture_output=True, text=True,
                            timeout=120, start_new_session=True)
    assert result.returncode == 3 and "parent took it" in result.stdout, result.stderr[-2000:]
    assert "killed by signal" not in result.stderr


@pytest.mark.slow
def test_a_stuck_worker_is_still_stopped_when_its_loader_ends():
    """The loader stops a worker that does not finish by SIGTERM: a worker ignoring it outlived the loader and kept
    the parent from exiting."""
    program = textwrap.dedent("""
        import time, torch
        from torch.utils.data import DataLoader, Dataset
        from encoder.workers import WorkerInit

        class Stuck(Dataset):
            def __len__(self):
                return 100
            def __getitem__(self, i):
                if i >= 2:
                    time.sleep(3600)  # a hung read
                return i

        for batch in DataLoader(Stuck(), batch_size=1, num_workers=1, worker_init_fn=WorkerInit()):
            break  # the loader ends while its worker is stuck
        print("done", flush=True)
    """)
    result = subprocess.run([sys.executable, "-c", program], env=ENV, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]


def test_training_loaders_carry_the_worker_init(tmp_path, tiny_encoder):
    from tests.training.synthetic_categories import make_dataset
    from training.category import CategoryOptions, CategoryTask
    from training.data import CategoryDataset, ClassSplit
    from training.loop import _skip_batches

    data = CategoryDataset.scan(make_dataset(tmp_path / "d", classes=["h1", "h2", "v1"], per_class=2))
    task = CategoryTask(data, ClassSplit(train=["h1", "h2"], val=["v1"], test=[]), tiny_encoder,
                        CategoryOptions(batch_size=2, workers=1, augment=False))
    loader = task.train_loader(0)
    assert isinstance(loader.worker_init_fn, WorkerInit) and loader.worker_init_fn.parent_pid == os.getpid()
    assert isinstance(_skip_batches(loader, 1).worker_init_fn, WorkerInit)
    assert len(next(iter(loader))) == 2  # a worker starts with it and delivers
