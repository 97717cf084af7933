"""What every benchmark prints first: the machine it ran on and how busy it was."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average (1/5/15 min) {load}"
    )
