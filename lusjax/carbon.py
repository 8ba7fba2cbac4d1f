"""Energy and carbon per phase: cumulator's model offline, plus measured energy.

Two numbers per phase (prep, pretrain, probe, finetune, eval, predict, ...):

1. **Model** (always there). cumulator 0.1.0's method, re-done offline from its
   own data tables (read with `importlib.resources.files('cumulator')`; its code
   geolocates over the network and imports undeclared modules, so it is not run).
   It mirrors `cumulator/base.py`, class `Cumulator`:
   - `computation_costs()`: time_s x n_devices x TDP_W / 3.6e6 (its
     `hardware_load = TDP / 3.6e6`, kWh per second) x carbon intensity;
   - `communication_costs()`: kB transferred x 6.894e-8 kWh/kB (`one_byte_model`)
     x carbon intensity (`add_data_transfer`, 1 kB = 1000 bytes);
   - TDP from `hardware_data/cpu.csv` / `gpu.csv` (`detect_cpu` / `detect_gpu`),
     the first hit wins, else its default `TDP = 250` W; our own
     `lusjax/carbon_tdp.csv` (sourced rows for H100/H200/A100/L4/TPU) is tried
     before cumulator's gpu.csv for accelerators;
   - carbon intensity: `co2_per_unit_energy` (kg CO2e/kWh) of the country in
     `countries_data/country_dataset_adjusted.csv` (`position_carbon_intensity`).
     Our default is its 'World' row (0.226); cumulator's own default when it
     cannot geolocate is 447 g/kWh (EU 2014). Caveat kept from cumulator: that
     column is Our World in Data's CO2 per kWh of *primary energy*, lower than
     grid-electricity intensity (about 0.48 kg/kWh world-wide).
   - human units from `metrics_conversion_data/CO2_metrics.json`, factors per
     gram CO2e as in `display_carbon_footprint()`. Its "Meters driven" factor
     (0.00404 per g) is in fact km per g (EPA: 1 t CO2e ~ 2,513 miles ~ 4,044 km),
     so we report it as km.
   The model covers the tracker's devices only (GPUs/TPUs, or the CPU package(s)
   for a CPU run), at full TDP for the whole phase: an upper-bound style estimate.
2. **Measured** (when a sensor exists): GPU energy from NVML, CPU-package energy
   from RAPL, see `lusjax.energy_sensors`. Missing sensors say "not available:
   <reason>"; no number is ever made up.

Only time inside `with tracker.phase(name):` counts. Re-entering a phase name adds
to it. Multi-host: each process tracks its local devices (and its host's
sensors); add the hosts' numbers up.

A run's `carbon.json` is a ledger of its segments (each start of a command on the
workdir: a run preempted and resumed twice has three), `record_segment` adds one:
`{"segments": [{start, end, host, ..., <Tracker.summary()>}, ...], "totals":
{"phases": [...], "total": {...}}}`, the totals being the sums over segments.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.resources
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lusjax.energy_sensors import NvmlEnergy, RaplEnergy
from lusjax.errors import UserError
from lusjax.layout import CARBON_JSON

J_PER_KWH = 3.6e6  # cumulator/cumulator.py Joule2kWh
KWH_PER_KB = 6.894e-8  # cumulator/base.py Cumulator.one_byte_model (kWh/kB)
FALLBACK_TDP_W = 250.0  # cumulator/base.py Cumulator.__init__: self.TDP = 250
DEFAULT_COUNTRY = "WORLD"  # row 'World' of country_dataset_adjusted.csv: 0.226 kg/kWh
_CAR_KEY = "Meters driven by an avarage passenger vehicle"  # sic, a km-per-gram factor
_PHONE_KEY = "Smartphones charged"
_CUMULATOR_CPU_RE = r"(Core|Ryzen).* (i\d-\d{3,5}.?|\d \d{3,5}.?)"  # base.py regexp_cpu


# ---------------------------------------------------------------- data tables
def _cumulator_text(rel: str) -> str:
    return importlib.resources.files("cumulator").joinpath(rel).read_text(encoding="utf-8")


@functools.cache
def _intensity_table() -> dict[str, tuple[str, float]]:
    rows = csv.DictReader(
        io.StringIO(_cumulator_text("countries_data/country_dataset_adjusted.csv"))
    )
    return {r["country"].upper(): (r["country"], float(r["co2_per_unit_energy"])) for r in rows}


@functools.cache
def _iso3_names() -> dict[str, str]:
    """ISO 3166 alpha-3 -> country name, from cumulator's raw OWID table."""
    out: dict[str, str] = {}
    for line in _cumulator_text("countries_data/country_data.csv").splitlines()[1:]:
        code, name, _ = line.split(",", 2)
        if code:
            out.setdefault(code.upper(), name)
    return out


@functools.cache
def _name_to_iso2() -> dict[str, str]:
    return {
        d["Name"]: d["Code"]
        for d in json.loads(_cumulator_text("countries_data/countr_2_dig.json"))
    }


def known_countries() -> list[str]:
    """Valid `country` values besides ISO alpha-3 codes: ISO alpha-2 codes and regions."""
    return sorted(label for label, _ in _intensity_table().values())


def carbon_intensity(country: str = DEFAULT_COUNTRY) -> tuple[float, str]:
    """kg CO2e per kWh for `country` ('WORLD', ISO alpha-2/alpha-3, or a region name)."""
    table, key = _intensity_table(), country.strip().upper()
    hit = table.get(key)
    if hit is None and len(key) == 3 and key.isalpha():
        name = _iso3_names().get(key, "")
        hit = table.get(name.upper()) or table.get(_name_to_iso2().get(name, "").upper())
    if hit is None:
        raise UserError(
            f"unknown carbon country {country!r}: use 'WORLD', an ISO 3166 alpha-2 or alpha-3 "
            "code ('FR', 'FRA') or a region such as 'Europe'; list them with `python -m "
            "lusjax.carbon countries` (cumulator countries_data/country_dataset_adjusted.csv)"
        )
    label, value = hit
    return value, f"cumulator country_dataset_adjusted.csv row {label!r}"


@functools.cache
def _hw_table(kind: str) -> list[tuple[str, float]]:
    rows = csv.DictReader(io.StringIO(_cumulator_text(f"hardware_data/{kind}.csv")))
    return [(r["name"].strip(), float(r["TDP"])) for r in rows if r["TDP"].strip()]


@functools.cache
def _own_table() -> list[dict[str, str]]:
    text = importlib.resources.files("lusjax").joinpath("carbon_tdp.csv").read_text()
    return list(csv.DictReader(io.StringIO(text)))


def _clean_cpu(brand: str) -> str:
    s = re.sub(r"\((R|TM)\)|@.*$", " ", brand, flags=re.IGNORECASE)
    s = re.sub(r"\b(Intel|AMD|CPU|Processor|\d+-Core)\b", " ", s, flags=re.IGNORECASE)
    return " ".join(s.split())


def _phrase_in(name: str, text: str) -> bool:
    # Whole phrase, and not a different generation: 'Xeon E5-2680' is not 'Xeon E5-2680 v4'.
    pat = rf"(?<![\w.+-]){re.escape(name)}(?![\w+-])(?!\s+v\d)"
    return re.search(pat, text, re.IGNORECASE) is not None


def cpu_tdp(model_name: str) -> tuple[float, str] | None:
    """TDP of a CPU from /proc/cpuinfo's model name via cumulator's cpu.csv, or None.

    First cumulator's own rule (base.py `detect_cpu`: regex `regexp_cpu`, then a
    table name containing it), then an exact or whole-phrase match of a table name
    (with a model number) in the cleaned name, e.g. 'AMD EPYC 7763 64-Core
    Processor' -> 'EPYC 7763'. The longest matching name wins.
    """
    table = _hw_table("cpu")
    cands = [_clean_cpu(model_name)]
    m = re.search(_CUMULATOR_CPU_RE, model_name)
    if m:
        cands.insert(0, f"{m.group(1)} {m.group(2)}".strip())
    for c in cands:
        for name, tdp in table:
            if name.lower() == c.lower():
                return tdp, f"cumulator hardware_data/cpu.csv row {name!r}"
    hits = [(n, t) for n, t in table if re.search(r"\d", n) and _phrase_in(n, cands[-1])]
    if hits:
        name, tdp = max(hits, key=lambda h: len(h[0]))
        return tdp, f"cumulator hardware_data/cpu.csv row {name!r}"
    return None


def _gpu_tokens(s: str) -> frozenset[str]:
    s = re.sub(r"(\d+)\s*gb\b", r"\1gb", s.lower().replace("-", " ").replace("_", " "))
    return frozenset(t for t in s.split() if t != "nvidia")


def accelerator_tdp(device_kind: str) -> tuple[float, str]:
    """TDP of one GPU/TPU chip: lusjax carbon_tdp.csv, cumulator gpu.csv, else 250 W."""
    unpublished = ""
    for row in _own_table():
        if re.search(row["pattern"], device_kind, re.IGNORECASE):
            if row["tdp_w"]:
                src = f"lusjax carbon_tdp.csv {row['name']!r} ({row['source_url']})"
                return float(row["tdp_w"]), src
            unpublished = f"{row['name']} publishes no TDP ({row['source_url']}); "
            break
    if not unpublished:
        dev = _gpu_tokens(device_kind)
        hits = [
            (len(t), n, w)
            for n, w in _hw_table("gpu")
            if (t := _gpu_tokens(n)) <= dev and any(c.isdigit() for c in "".join(t))
        ]
        if hits:
            _, name, tdp = max(hits, key=lambda h: h[0])  # first of the longest, like values[0]
            return tdp, f"cumulator hardware_data/gpu.csv row {name!r}"
    src = f"cumulator default {FALLBACK_TDP_W:g} W (base.py), no match for {device_kind!r}"
    return FALLBACK_TDP_W, unpublished + src


def _read_cpuinfo(path: str) -> tuple[str, int]:
    """(model name, number of physical packages) from /proc/cpuinfo."""
    try:
        text = Path(path).read_text()
    except OSError:
        return "unknown CPU", 1
    names = re.findall(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
    packages = set(re.findall(r"^physical id\s*:\s*(\d+)", text, re.MULTILINE))
    return (names[0].strip() if names else "unknown CPU"), max(1, len(packages))


# ---------------------------------------------------------------- arithmetic
def compute_kwh(time_s: float, n_devices: int, tdp_w: float) -> float:
    """cumulator `computation_costs()` without the intensity: s x devices x W / 3.6e6."""
    return time_s * n_devices * tdp_w / J_PER_KWH


def transfer_kwh(n_bytes: float) -> float:
    """cumulator `communication_costs()` without the intensity: kB x 6.894e-8 kWh/kB."""
    return n_bytes / 1000.0 * KWH_PER_KB


@functools.cache
def _metrics() -> dict[str, float]:
    data = json.loads(_cumulator_text("metrics_conversion_data/CO2_metrics.json"))
    out: dict[str, float] = {}
    for m in data:
        out.setdefault(m["measure"], float(m["eq_factor"]))
    return out


def human_units(kg_co2e: float) -> dict[str, float]:
    """km driven by an average car and smartphone charges, per cumulator's factors."""
    g = kg_co2e * 1000.0
    return {"km_by_car": g * _metrics()[_CAR_KEY], "phone_charges": g * _metrics()[_PHONE_KEY]}


# ---------------------------------------------------------------- tracker
class _Phase:
    def __init__(self, name: str):
        self.name, self.time_s, self.bytes, self.entries = name, 0.0, 0, 0
        self.gpu_j: float | None = 0.0
        self.cpu_j: float | None = 0.0
        self.t0 = 0.0
        self.gpu0: float | None = None
        self.cpu0: float | None = None


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


class Tracker:
    """Times named phases and turns them into kWh and kg CO2e (model and measured).

    country: 'WORLD' (default, cumulator's World row) or an ISO code/region.
    device_kind/n_devices: default to this process's JAX local devices; a CPU
      run counts the CPU package(s) from /proc/cpuinfo, not JAX's CPU devices.
    cpu_tdp_w/gpu_tdp_w: override the TDP of a CPU run / an accelerator chip.
    measure: open the NVML (GPU runs, or when `nvml` is injected) and RAPL sensors.
    sample_interval_s: background polling of the sensors (power samples, RAPL
      wraps); None polls only on phase boundaries and `snapshot()`.
    cpuinfo_path: where the CPU model name is read (tests pass a fake).

    `model_kwh` = compute (devices x TDP x time) + data transfer; `measured_kwh`
    = the sum of the measured sources that exist (GPU and/or CPU packages), None
    when none does. A total is None when any phase lacks that number.
    """

    def __init__(
        self,
        country: str = DEFAULT_COUNTRY,
        device_kind: str | None = None,
        n_devices: int | None = None,
        cpu_tdp_w: float | None = None,
        gpu_tdp_w: float | None = None,
        measure: bool = True,
        clock: Callable[[], float] = time.monotonic,
        nvml: Any = None,
        rapl_root: str = "/sys/class/powercap",
        sample_interval_s: float | None = 1.0,
        cpuinfo_path: str = "/proc/cpuinfo",
    ):
        self.country = country
        self.intensity, self.intensity_source = carbon_intensity(country)
        self._clock = clock
        local_n = None
        if device_kind is None:
            import jax

            devs = jax.local_devices()
            device_kind, local_n = devs[0].device_kind, len(devs)
        kind_l = device_kind.lower()
        self.platform = "cpu" if kind_l == "cpu" else "tpu" if kind_l.startswith("tpu") else "gpu"
        self.device_kind = device_kind
        self.cpu_model, n_packages = _read_cpuinfo(cpuinfo_path)
        if self.platform == "cpu":
            self.n_devices = n_devices or n_packages
            found = cpu_tdp(self.cpu_model)
            if cpu_tdp_w is not None:
                self.tdp_w, self.tdp_source = float(cpu_tdp_w), "cpu_tdp_w override"
            elif found:
                self.tdp_w, self.tdp_source = found
            else:
                self.tdp_w = FALLBACK_TDP_W
                self.tdp_source = (
                    f"cumulator default {FALLBACK_TDP_W:g} W (base.py), "
                    f"CPU {self.cpu_model!r} not in cpu.csv"
                )
        else:
            self.n_devices = n_devices or local_n or 1
            if gpu_tdp_w is not None:
                self.tdp_w, self.tdp_source = float(gpu_tdp_w), "gpu_tdp_w override"
            else:
                self.tdp_w, self.tdp_source = accelerator_tdp(device_kind)

        self._gpu = self._cpu = None
        off = "measure=False" if not measure else ""
        if measure and (self.platform == "gpu" or nvml is not None):
            self._gpu = NvmlEnergy(nvml=nvml, clock=clock)
        if measure:
            self._cpu = RaplEnergy(rapl_root)
        # A sensor that never opened measures nothing, not even a phase of 0 s.
        self._gpu_opened = bool(self._gpu and self._gpu.available)
        self._cpu_opened = bool(self._cpu and self._cpu.available)
        self.gpu_sensor = (
            self._gpu.description if self._gpu else f"not available: {off or 'not a GPU run'}"
        )
        self.cpu_sensor = self._cpu.description if self._cpu else f"not available: {off}"

        self._phases: dict[str, _Phase] = {}
        self._current: _Phase | None = None
        self._last: _Phase | None = None
        self._stop = threading.Event()
        self._thread = None
        if sample_interval_s and any(s and s.available for s in (self._gpu, self._cpu)):
            self._thread = threading.Thread(
                target=self._poll_loop, args=(sample_interval_s,), name="carbon-poll", daemon=True
            )
            self._thread.start()

    def _poll_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for s in (self._gpu, self._cpu):
                if s is not None:
                    s.poll()

    def _read(self) -> tuple[float | None, float | None]:
        return (
            self._gpu.energy_j() if self._gpu else None,
            self._cpu.energy_j() if self._cpu else None,
        )

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Tracker]:
        """Count the time (and measured energy) of the block towards phase `name`."""
        if self._current is not None:
            raise RuntimeError(f"phase {name!r} started inside phase {self._current.name!r}")
        rec = self._phases.setdefault(name, _Phase(name))
        rec.entries += 1
        rec.gpu0, rec.cpu0 = self._read()
        rec.t0 = self._clock()
        self._current = self._last = rec
        try:
            yield self
        finally:
            self._end()

    def _end(self) -> None:
        rec, self._current = self._current, None
        if rec is None:
            return
        rec.time_s += self._clock() - rec.t0
        g1, c1 = self._read()
        rec.gpu_j = _add(rec.gpu_j, None if g1 is None or rec.gpu0 is None else g1 - rec.gpu0)
        rec.cpu_j = _add(rec.cpu_j, None if c1 is None or rec.cpu0 is None else c1 - rec.cpu0)

    def add_data_transfer(self, n_bytes: int) -> None:
        """Add cumulator's data-transfer term for `n_bytes` to the current phase."""
        rec = self._current or self._phases.setdefault("other", _Phase("other"))
        rec.bytes += int(n_bytes)

    def _numbers(self, rec: _Phase) -> dict[str, Any]:
        t, gj, cj = rec.time_s, rec.gpu_j, rec.cpu_j
        if rec is self._current:  # in progress: add the open interval
            t += self._clock() - rec.t0
            g1, c1 = self._read()
            gj = _add(gj, None if g1 is None or rec.gpu0 is None else g1 - rec.gpu0)
            cj = _add(cj, None if c1 is None or rec.cpu0 is None else c1 - rec.cpu0)
        ck, tk = compute_kwh(t, self.n_devices, self.tdp_w), transfer_kwh(rec.bytes)
        gk = None if gj is None or not self._gpu_opened else gj / J_PER_KWH
        cpk = None if cj is None or not self._cpu_opened else cj / J_PER_KWH
        mk = None if gk is None and cpk is None else (gk or 0.0) + (cpk or 0.0)
        return {
            "time_s": t, "data_transfer_bytes": rec.bytes,
            "model_compute_kwh": ck, "model_transfer_kwh": tk,
            "model_kwh": ck + tk, "model_kg_co2e": (ck + tk) * self.intensity,
            "measured_gpu_kwh": gk, "measured_cpu_kwh": cpk, "measured_kwh": mk,
            "measured_kg_co2e": None if mk is None else mk * self.intensity,
        }  # fmt: skip

    def _all(self) -> tuple[list[tuple[str, dict]], dict[str, Any]]:
        rows = [(n, self._numbers(r)) for n, r in self._phases.items()]
        total: dict[str, Any] = {}
        for k in rows[0][1] if rows else self._numbers(_Phase("")):
            vals = [r[k] for _, r in rows]
            total[k] = None if any(v is None for v in vals) else sum(vals)
        return rows, total

    def snapshot(self) -> dict[str, Any]:
        """Flat JSON-able numbers: the current (else last) phase's, and totals."""
        rows, total = self._all()
        rec = self._current or self._last
        cur = dict(rows)[rec.name] if rec else self._numbers(_Phase(""))
        out: dict[str, Any] = {"phase": rec.name if rec else None, "phase_time_s": cur["time_s"]}
        out.update({k: v for k, v in cur.items() if k != "time_s"})
        out["total_time_s"] = total["time_s"]
        out.update({f"total_{k}": v for k, v in total.items() if k != "time_s"})
        return out

    def summary(self) -> dict[str, Any]:
        """Per-phase and total numbers with their sources and human units."""
        self.gpu_sensor = self._gpu.description if self._gpu else self.gpu_sensor
        self.cpu_sensor = self._cpu.description if self._cpu else self.cpu_sensor
        rows, total = self._all()
        common = {"n_devices": self.n_devices, "tdp_w": self.tdp_w, "tdp_source": self.tdp_source}

        def row(name: str, nums: dict[str, Any]) -> dict[str, Any]:
            r = {"phase": name, **common, **nums, **human_units(nums["model_kg_co2e"])}
            for src, key in (("gpu", "measured_gpu_kwh"), ("cpu", "measured_cpu_kwh")):
                sensor = getattr(self, f"{src}_sensor")
                if r[key] is not None:
                    r[f"measured_{src}"] = "available"
                elif sensor.startswith("not available"):
                    r[f"measured_{src}"] = sensor
                else:
                    r[f"measured_{src}"] = "not available: sensor failed during this phase"
            return r

        return {
            "country": self.country,
            "carbon_intensity_kg_per_kwh": self.intensity,
            "carbon_intensity_source": self.intensity_source,
            "platform": self.platform,
            "device_kind": self.device_kind,
            "cpu_model": self.cpu_model,
            **common,
            "measured_gpu_source": self.gpu_sensor,
            "measured_cpu_source": self.cpu_sensor,
            "human_units_basis": "model_kg_co2e, cumulator CO2_metrics.json",
            "phases": [row(n, r) for n, r in rows],
            "total": row("total", total),
        }

    def close(self) -> None:
        """End an open phase, stop polling, release NVML. Safe to call twice."""
        if self._current is not None:
            self._end()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for s in (self._gpu, self._cpu):
            if s is not None:
                s.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- ledger
SUMMED = (
    "time_s",
    "data_transfer_bytes",
    "model_compute_kwh",
    "model_transfer_kwh",
    "model_kwh",
    "model_kg_co2e",
    "measured_gpu_kwh",
    "measured_cpu_kwh",
    "measured_kwh",
    "measured_kg_co2e",
    "km_by_car",
    "phone_charges",
)


def sum_rows(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Row `name`: the SUMMED numbers of `rows` (phases or totals) added up, by the
    Tracker's rule: a sum is None (unknown) when any part lacks the number."""
    out: dict[str, Any] = {"phase": name}
    for k in SUMMED:
        vals = [r.get(k) for r in rows]
        out[k] = None if any(v is None for v in vals) else sum(vals)
    return out


def _ledger(segments: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(dict.fromkeys(p["phase"] for s in segments for p in s["phases"]))
    totals = {
        "phases": [
            sum_rows(n, [p for s in segments for p in s["phases"] if p["phase"] == n])
            for n in names
        ],
        "total": sum_rows("total", [s["total"] for s in segments]),
    }
    return {"segments": segments, "totals": totals}


def read_ledger(workdir: str | os.PathLike) -> dict[str, Any]:
    """A run's carbon.json as `{"segments": [...], "totals": {...}}`. A carbon.json from
    before segments existed (one `Tracker.summary()`) is one segment; none: no segment."""
    from lusjax import files

    path = files.path(workdir) / CARBON_JSON
    data = json.loads(path.read_text()) if path.exists() else {"segments": []}
    return _ledger(data.get("segments", [data]))


def record_segment(
    workdir: str | os.PathLike, summary: dict[str, Any], **info: Any
) -> dict[str, Any]:
    """Appends one segment (`info`, e.g. start, end, host, steps, exit, and a
    `Tracker.summary()`) to `<workdir>/carbon.json`, recomputes the totals, writes the
    ledger atomically and returns it. Call it on process 0 only."""
    from lusjax import files

    ledger = _ledger([*read_ledger(workdir)["segments"], {**info, **summary}])
    files.write_text_atomic(files.path(workdir) / CARBON_JSON, json.dumps(ledger, indent=1) + "\n")
    return ledger


def utc_now() -> str:
    """Now, as a segment's start or end: ISO 8601 in UTC, to the second."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def tracked(
    directory: str | os.PathLike, phase: str, *, country: str = DEFAULT_COUNTRY, **info: Any
) -> Iterator[Tracker]:
    """Runs the block as phase `phase` of a new Tracker and, when it completes, appends
    its segment (start, end, host, `info`) to `<directory>/carbon.json`, the same ledger
    as a training run's: how `lusjax prep`, `eval` and `predict` account for themselves.
    A block that raises records nothing (its output is not there either)."""
    import socket

    start = utc_now()
    with Tracker(country=country) as tracker:
        with tracker.phase(phase):
            yield tracker
        summary = tracker.summary()
    record_segment(
        directory, summary, start=start, end=utc_now(), host=socket.gethostname(), **info
    )


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["countries"]:
        for _label, (name, v) in sorted(_intensity_table().items()):
            print(f"{name}\t{v}")
    else:
        print("usage: python -m lusjax.carbon countries")
