"""Run one ``ropetheory`` command with a signal sent to itself right after the k-th saved unit.

``python tests/fault_runner.py SIGINT:3 fig7 --out ...`` is ``python -m ropetheory.cli fig7 --out ...``
interrupted by SIGINT (or killed by SIGKILL) right after the 3rd journal row, part or checkpoint is on
disk. The hook is installed here, in the test process's own entry point (``ropetheory.store.SAVE_HOOK``);
the package itself never reads a fault setting.
"""
from __future__ import annotations

import os
import signal
import sys


def signal_after(spec: str):
    """A ``SAVE_HOOK`` that sends ``NAME`` to this process when it is called the ``k``-th time (``NAME:k``)."""
    name, _, at = spec.partition(":")
    sig, k = getattr(signal, name), int(at)
    calls = [0]

    def hook() -> None:
        calls[0] += 1
        if calls[0] == k:
            os.kill(os.getpid(), sig)
    return hook


if __name__ == "__main__":
    from ropetheory import cli, store
    spec, *argv = sys.argv[1:]
    store.SAVE_HOOK = signal_after(spec)
    sys.exit(cli.main(argv))
