"""On a terminal the sweep's status is a progress bar redrawn in place (a pseudo-terminal here, as
a user's shell gives it): trials done of the total, each running trial's step of its budget, the
best so far and the time left. (Off a terminal it is plain lines: tests/test_sweep.py.)"""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

from conftest import CLI_ENV, ROOT


@pytest.mark.slow
def test_a_terminal_gets_a_bar_redrawn_in_place(ray_address, tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))  # a terminal 250 columns wide
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.sweep", "vae", "--dataset", "digits", "--set", "arch=mlp", "--trials", "2",
         "--max-steps", "300", "--eval-every", "100", "--log-every", "25", "--eval-samples", "300",
         "--max-concurrent", "1", "--scheduler", "fifo", "--storage", str(tmp_path), "--name", "tty", "--address",
         ray_address, "--rescore-top", "0", "--no-dashboard"],
        stdin=follower, stdout=follower, stderr=follower, cwd=ROOT, env={**os.environ, **CLI_ENV}, close_fds=True)
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 300)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # the sweep exited and closed the terminal
            chunk = b""
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=60) == 0, output.decode(errors="replace")[-3000:]
    text = output.decode(errors="replace")
    redraws = [part for part in text.split("\r") if "running (" in part]
    assert len(redraws) >= 2, text[-3000:]  # the bar, drawn again over itself
    assert re.search(r"1 running \([0-9a-f]{8} step \d+/300\), \d pending", text), text[-3000:]
    assert re.search(r" 50% \|.{20}\| 1 done, 1 running", text), text[-3000:]  # tqdm's bar: trials done of the total
    assert "[sweep] 2 of 2 trials done; best elbo" in text or "[sweep] 2 of 2 trials done; best" in text
