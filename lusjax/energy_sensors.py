"""Measured energy: GPU through NVML, CPU packages through RAPL (Linux powercap).

Each sensor reports joules used since it was opened, or says why it cannot
(`available` is False and `reason` holds one sentence). It never guesses: a
sensor that fails mid-run turns unavailable and reports None from then on.

- `NvmlEnergy`: NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`,
  millijoules since the driver loaded, Volta and newer) when every device supports
  it; otherwise `nvmlDeviceGetPowerUsage` (milliwatts) sampled on each `poll()` and
  integrated with the trapezoid rule. `nvidia-ml-py` (module `pynvml`) is imported
  only here, lazily; pass `nvml=` to inject a fake.
- `RaplEnergy`: the `energy_uj` counters of the top-level package zones under
  /sys/class/powercap (`intel-rapl:N`, also used by AMD Zen). Counters wrap at
  `max_energy_range_uj`; a `poll()` more often than one wrap period (minutes at
  full load) catches every wrap. Since Linux 5.10 `energy_uj` is readable by root
  only: then the sensor is unavailable with that reason.

`poll()` is called by the tracker's background thread and on every read.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class NvmlEnergy:
    """Energy of the GPUs this process can see, from NVML."""

    def __init__(
        self,
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
        visible_devices: str | None = None,
    ):
        self.available = False
        self.reason: str | None = None
        self.mode = ""
        self.n_devices = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._nvml = nvml
        self._handles: list[Any] = []
        self._owns_init = False
        if visible_devices is None:
            visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            self._open(visible_devices)
        except Exception as e:
            self.reason = f"NVML failed: {type(e).__name__}: {e}"
        if not self.available:
            self.close()

    def _open(self, visible: str | None) -> None:
        if self._nvml is None:
            try:
                import pynvml  # from nvidia-ml-py
            except ImportError:
                self.reason = "nvidia-ml-py (module pynvml) is not installed"
                return
            self._nvml = pynvml
        nv = self._nvml
        nv.nvmlInit()
        self._owns_init = True
        ids = [s.strip() for s in visible.split(",") if s.strip()] if visible else None
        if ids is None:
            self._handles = [
                nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())
            ]
        elif all(s.isdigit() for s in ids):
            self._handles = [nv.nvmlDeviceGetHandleByIndex(int(s)) for s in ids]
        else:
            self._handles = [nv.nvmlDeviceGetHandleByUUID(s) for s in ids]
        if not self._handles:
            self.reason = "NVML sees no GPU"
            return
        self.n_devices = len(self._handles)
        try:
            self._start_mj = [nv.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]
            self.mode = "counter"
        except Exception:
            self._last_w = self._power_w()
            self._last_t = self._clock()
            self._joules = 0.0
            self.mode = "power"
        self.available = True

    def _power_w(self) -> float:
        return sum(self._nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000.0

    @property
    def description(self) -> str:
        if not self.available:
            return f"not available: {self.reason}"
        how = {
            "counter": "total-energy counter",
            "power": "power samples, trapezoid rule",
        }[self.mode]
        return f"NVML {how}, {self.n_devices} GPU(s)"

    def poll(self) -> None:
        """Take a power sample (power mode); a no-op for the energy counter."""
        with self._lock:
            if not self.available or self.mode != "power":
                return
            try:
                w, t = self._power_w(), self._clock()
            except Exception as e:
                self._fail(e)
                return
            self._joules += 0.5 * (w + self._last_w) * (t - self._last_t)
            self._last_w, self._last_t = w, t

    def energy_j(self) -> float | None:
        """Joules used by the GPUs since this sensor opened, or None."""
        self.poll()
        with self._lock:
            if not self.available:
                return None
            if self.mode == "power":
                return self._joules
            try:
                now = [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]
            except Exception as e:
                self._fail(e)
                return None
            return sum(b - a for a, b in zip(self._start_mj, now)) / 1000.0

    def _fail(self, e: Exception) -> None:
        self.available = False
        self.reason = f"NVML read failed mid-run: {type(e).__name__}: {e}"

    def close(self) -> None:
        if self._owns_init:
            self._owns_init = False
            with contextlib.suppress(Exception):  # shutting down; nothing left to report
                self._nvml.nvmlShutdown()


_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


class RaplEnergy:
    """Energy of the CPU packages from the RAPL `energy_uj` counters."""

    def __init__(self, root: str | os.PathLike = "/sys/class/powercap"):
        self.available = False
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._zones: list[tuple[Path, int]] = []  # (energy_uj path, max range)
        self._last: list[int] = []
        self._joules = 0.0
        root = Path(root)
        if not root.is_dir():
            self.reason = f"{root} does not exist (no RAPL powercap interface)"
            return
        try:
            for d in sorted(root.iterdir()):
                # Top-level package zones only: sub-zones (core, uncore, dram) are
                # parts of a package and 'psys' covers the whole platform.
                if not _PACKAGE_ZONE.match(d.name):
                    continue
                name = (d / "name").read_text().strip() if (d / "name").exists() else ""
                if not name.startswith("package"):
                    continue
                rng = int((d / "max_energy_range_uj").read_text())
                self._zones.append((d / "energy_uj", rng))
            if not self._zones:
                self.reason = f"no RAPL package zone (intel-rapl:N) under {root}"
                return
            self._last = [int(p.read_text()) for p, _ in self._zones]
        except PermissionError as e:
            self.reason = (
                f"permission denied reading {e.filename} (RAPL counters are root-only "
                "since Linux 5.10)"
            )
            return
        except (OSError, ValueError) as e:
            self.reason = f"cannot read RAPL under {root}: {e}"
            return
        self.available = True

    @property
    def description(self) -> str:
        if not self.available:
            return f"not available: {self.reason}"
        return f"RAPL energy_uj, {len(self._zones)} CPU package(s)"

    def poll(self) -> None:
        """Add the counters' increase since the last poll, unwrapping overflows."""
        with self._lock:
            if not self.available:
                return
            try:
                now = [int(p.read_text()) for p, _ in self._zones]
            except (OSError, ValueError) as e:
                self.available = False
                self.reason = f"RAPL read failed mid-run: {e}"
                return
            for i, ((_, rng), prev, cur) in enumerate(zip(self._zones, self._last, now)):
                delta = cur - prev
                if delta < 0:  # the counter wrapped past max_energy_range_uj
                    delta += rng
                self._joules += delta / 1e6
                self._last[i] = cur

    def energy_j(self) -> float | None:
        """Joules used by the CPU packages since this sensor opened, or None."""
        self.poll()
        with self._lock:
            return self._joules if self.available else None

    def close(self) -> None:
        pass
