"""Carbon tracker: cumulator's arithmetic by hand, fake NVML/RAPL/clock, break-even."""

import csv
import importlib.resources
import json
import re
from pathlib import Path

import pytest

from lusjax import carbon, carbon_report, layout
from lusjax.energy_sensors import NvmlEnergy, RaplEnergy
from lusjax.errors import UserError

H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture(autouse=True)
def _all_fake_gpus_visible(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeNvml:
    """The few pynvml calls the sensor uses; energy_mj=None means 'not supported'."""

    def __init__(self, n=2, energy_mj=None, power_mw=None, fail_init=False):
        self.energy_mj = energy_mj
        self.power_mw = power_mw if power_mw is not None else [0] * n
        self.n, self.fail_init, self.shutdowns = n, fail_init, 0

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("Driver Not Loaded")

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return self.n

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if self.energy_mj is None:
            raise RuntimeError("Not Supported")
        return self.energy_mj[h]

    def nvmlDeviceGetPowerUsage(self, h):
        return self.power_mw[h]


def make_rapl(root: Path, energy_uj=0, max_uj=262_143_328_850) -> Path:
    """A powercap tree: one package zone, a sub-zone and psys (both must be ignored)."""
    for zone, name, e in [
        ("intel-rapl:0", "package-0", energy_uj),
        ("intel-rapl:0:0", "core", 5),
        ("intel-rapl:1", "psys", 7),
    ]:
        d = root / zone
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{e}\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return root / "intel-rapl:0" / "energy_uj"


def write_cpuinfo(path: Path, model: str) -> str:
    path.write_text(f"processor\t: 0\nmodel name\t: {model}\nphysical id\t: 0\n")
    return str(path)


def test_model_and_measured_match_hand_computation(tmp_path):
    clock = FakeClock()
    nvml = FakeNvml(n=2, energy_mj=[10_000, 20_000])
    rapl = make_rapl(tmp_path / "powercap", energy_uj=1_000_000)
    tr = carbon.Tracker(
        country="FR", device_kind=H100, n_devices=2, clock=clock, nvml=nvml,
        rapl_root=str(tmp_path / "powercap"), sample_interval_s=None,
        cpuinfo_path=write_cpuinfo(tmp_path / "cpuinfo", "AMD EPYC 7763 64-Core Processor"),
    )  # fmt: skip
    assert (tr.tdp_w, tr.intensity) == (700.0, 0.118)  # carbon_tdp.csv H100 SXM5; FR row
    with tr.phase("pretrain"):
        clock.t += 1800
        nvml.energy_mj = [10_000 + 450_000_000, 20_000 + 450_000_000]  # 2 x 450 kJ
        mid = tr.snapshot()
        assert mid["phase"] == "pretrain" and mid["phase_time_s"] == 1800
        assert mid["model_kwh"] == pytest.approx(1800 * 2 * 700 / 3.6e6)  # 0.7 kWh
        clock.t += 1800
        nvml.energy_mj = [10_000 + 900_000_000, 20_000 + 900_000_000]  # 2 x 900 kJ
        rapl.write_text(f"{1_000_000 + 180_000_000_000}\n")  # 180 kJ
        tr.add_data_transfer(10**9)  # 1e6 kB x 6.894e-8 kWh/kB
    with tr.phase("probe"):
        clock.t += 360
    snap = tr.snapshot()
    json.dumps(snap)
    # Hand computation: 3600 s x 2 x 700 W = 5.04e6 J = 1.4 kWh; transfer 0.06894 kWh.
    pre = next(p for p in tr.summary()["phases"] if p["phase"] == "pretrain")
    assert pre["model_compute_kwh"] == pytest.approx(1.4)
    assert pre["model_transfer_kwh"] == pytest.approx(0.06894)
    assert pre["model_kg_co2e"] == pytest.approx((1.4 + 0.06894) * 0.118)
    assert pre["measured_gpu_kwh"] == pytest.approx(1.8e6 / 3.6e6)  # 0.5 kWh
    assert pre["measured_cpu_kwh"] == pytest.approx(1.8e5 / 3.6e6)  # 0.05 kWh
    assert pre["measured_kg_co2e"] == pytest.approx(0.55 * 0.118)
    assert pre["km_by_car"] == pytest.approx(pre["model_kg_co2e"] * 1000 * 0.00404427142)
    assert pre["phone_charges"] == pytest.approx(pre["model_kg_co2e"] * 1000 * 0.121643)
    assert pre["measured_gpu"] == pre["measured_cpu"] == "available"
    # The snapshot shows the last phase (probe: 360 s, no energy) and the totals.
    assert snap["phase"] == "probe" and snap["phase_time_s"] == 360
    assert snap["measured_gpu_kwh"] == 0.0
    assert snap["total_time_s"] == 3960
    assert snap["total_model_kwh"] == pytest.approx(3960 * 1400 / 3.6e6 + 0.06894)
    assert snap["total_measured_kwh"] == pytest.approx(0.55)
    tr.close()
    tr.close()
    assert nvml.shutdowns == 1


def test_cpu_run_without_sensors_reports_model_and_not_available(tmp_path):
    clock = FakeClock()
    info = write_cpuinfo(tmp_path / "cpuinfo", "AMD EPYC 7763 64-Core Processor")
    tr = carbon.Tracker(
        device_kind="cpu", clock=clock, rapl_root=str(tmp_path / "absent"), cpuinfo_path=info
    )
    assert (tr.tdp_w, tr.n_devices) == (280.0, 1)  # cumulator cpu.csv 'EPYC 7763'
    with tr.phase("prep"):
        clock.t += 100
    s = tr.summary()
    row = s["phases"][0]
    assert row["model_kwh"] == pytest.approx(100 * 280 / 3.6e6)
    assert row["model_kg_co2e"] == pytest.approx(100 * 280 / 3.6e6 * 0.226)  # World default
    assert row["measured_kwh"] is None and row["measured_kg_co2e"] is None
    assert row["measured_gpu"] == "not available: not a GPU run"
    assert row["measured_cpu"].startswith("not available:") and "absent" in row["measured_cpu"]
    tr.add_data_transfer(10**6)  # outside a phase: 'other', model only, still not measured
    other = tr.summary()["phases"][-1]
    assert other["phase"] == "other" and other["measured_kwh"] is None
    assert other["model_transfer_kwh"] == pytest.approx(1000 * 6.894e-8)
    table = carbon_report.report_table(s)
    assert "| prep | 100 |" in table and "n/a" in table and "not available" in table
    json.dumps(s)
    tr.close()


def test_unknown_cpu_uses_cumulator_default_and_overrides(tmp_path):
    info = write_cpuinfo(tmp_path / "cpuinfo", "AMD EPYC")
    tr = carbon.Tracker(device_kind="cpu", measure=False, cpuinfo_path=info)
    assert tr.tdp_w == 250.0 and "default" in tr.tdp_source
    assert tr.summary()["measured_cpu_source"] == "not available: measure=False"
    tr = carbon.Tracker(device_kind="cpu", measure=False, cpu_tdp_w=65, cpuinfo_path=info)
    assert (tr.tdp_w, tr.tdp_source) == (65.0, "cpu_tdp_w override")
    tr = carbon.Tracker(device_kind=H100, measure=False, gpu_tdp_w=500, n_devices=4)
    assert (tr.tdp_w, tr.n_devices) == (500.0, 4)


def test_auto_detect_counts_cpu_packages_not_forced_jax_devices():
    tr = carbon.Tracker(measure=False)  # conftest forces 8 JAX CPU devices
    assert tr.platform == "cpu" and tr.device_kind == "cpu" and tr.n_devices >= 1
    assert tr.n_devices < 8


def test_country_lookup():
    assert carbon.carbon_intensity("WORLD")[0] == 0.226
    assert carbon.carbon_intensity("fra") == carbon.carbon_intensity("FR")
    assert carbon.carbon_intensity("RUS")[0] == 0.203  # table keeps the name 'Russia'
    assert carbon.carbon_intensity("Europe")[0] == 0.184
    with pytest.raises(UserError, match="python -m lusjax.carbon countries"):
        carbon.carbon_intensity("XYZ")
    with pytest.raises(UserError):
        carbon.Tracker(country="Atlantis", device_kind="cpu", measure=False)


@pytest.mark.parametrize(
    ("kind", "watts"),
    [
        (H100, 700), ("NVIDIA H100 PCIe", 350), ("NVIDIA H200", 700), ("NVIDIA H200 NVL", 600),
        ("NVIDIA A100-SXM4-80GB", 400), ("NVIDIA A100 80GB PCIe", 300), ("NVIDIA L4", 72),
        ("TPU v4", 192), ("Tesla T4", 70), ("NVIDIA GeForce RTX 3090", 350),
        ("TPU v5 lite", 250), ("NVIDIA GH200 480GB", 250),
    ],
)  # fmt: skip
def test_accelerator_tdp(kind, watts):
    assert carbon.accelerator_tdp(kind)[0] == watts


def test_own_tdp_table_rows_have_sources():
    text = importlib.resources.files("lusjax").joinpath("carbon_tdp.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) >= 10
    for r in rows:
        re.compile(r["pattern"])
        assert r["source_url"].startswith("https://") and r["note"]


def test_cpu_tdp_matching():
    assert carbon.cpu_tdp("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz")[0] == 95
    assert carbon.cpu_tdp("AMD EPYC 7313P 16-Core Processor")[0] == 155
    assert carbon.cpu_tdp("Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz") is None  # not v1's
    assert carbon.cpu_tdp("AMD EPYC") is None


def test_rapl_wraparound(tmp_path):
    max_uj = 1_000_000_000
    f = make_rapl(tmp_path, energy_uj=900_000_000, max_uj=max_uj)
    s = RaplEnergy(tmp_path)
    assert s.available and s.description == "RAPL energy_uj, 1 CPU package(s)"
    f.write_text("950000000\n")
    assert s.energy_j() == pytest.approx(50.0)
    f.write_text("100000000\n")  # wrapped: 50 J to the top, then 100 J
    assert s.energy_j() == pytest.approx(50.0 + 50.0 + 100.0)


def test_rapl_permission_denied(tmp_path, monkeypatch):
    make_rapl(tmp_path)
    real = Path.read_text

    def deny(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", deny)
    s = RaplEnergy(tmp_path)
    assert not s.available and s.energy_j() is None
    assert s.description.startswith("not available: permission denied reading")


def test_nvml_power_sampling_trapezoid():
    clock, nvml = FakeClock(), FakeNvml(n=2, power_mw=[100_000, 50_000])  # 150 W
    s = NvmlEnergy(nvml=nvml, clock=clock, visible_devices=None)
    assert s.mode == "power" and s.description == "NVML power samples, trapezoid rule, 2 GPU(s)"
    clock.t += 10
    assert s.energy_j() == pytest.approx(1500.0)
    nvml.power_mw = [200_000, 50_000]  # 250 W
    clock.t += 4
    assert s.energy_j() == pytest.approx(1500.0 + 4 * (150 + 250) / 2)


def test_nvml_visible_devices_and_failures():
    nvml = FakeNvml(n=4, energy_mj=[0, 1, 2, 3])
    assert NvmlEnergy(nvml=nvml, visible_devices="1,3").n_devices == 2
    bad = NvmlEnergy(nvml=FakeNvml(fail_init=True))
    assert not bad.available and "Driver Not Loaded" in bad.reason and bad.energy_j() is None
    assert not NvmlEnergy(nvml=FakeNvml(n=0)).available
    try:
        import pynvml  # noqa: F401
    except ImportError:
        s = NvmlEnergy()
        assert s.description == "not available: nvidia-ml-py (module pynvml) is not installed"


def test_phase_rules_and_accumulation(tmp_path):
    clock = FakeClock()
    tr = carbon.Tracker(device_kind=H100, n_devices=1, measure=False, clock=clock)
    for _ in range(2):
        with tr.phase("eval"):
            clock.t += 10
    with tr.phase("eval"), pytest.raises(RuntimeError, match="inside phase"), tr.phase("x"):
        pass
    s = tr.summary()
    assert [p["phase"] for p in s["phases"]] == ["eval"]
    assert s["phases"][0]["time_s"] == 20
    tr.add_data_transfer(1000)  # outside any phase: kept under 'other'
    assert tr.summary()["phases"][-1]["phase"] == "other"


def test_background_polling_thread_stops(tmp_path):
    make_rapl(tmp_path)
    tr = carbon.Tracker(device_kind="cpu", rapl_root=str(tmp_path), sample_interval_s=0.01)
    assert tr._thread is not None and tr._thread.is_alive()
    thread = tr._thread
    tr.close()
    assert not thread.is_alive()


def test_break_even_arithmetic():
    be = carbon_report.break_even(6.0, 0.5, 1.0)  # poster-like: pretrain = 6 supervised runs
    assert be["break_even_n"] == pytest.approx(12.0) and be["break_even_n_int"] == 12
    assert be["ssl_cost_kg"][12] == pytest.approx(be["supervised_cost_kg"][12])
    assert be["pretrain_over_supervised"] == 6.0 and be["n"][-1] == 24
    be = carbon_report.break_even(5.0, 1.0, 3.0)
    assert be["break_even_n"] == 2.5 and be["break_even_n_int"] == 3
    assert be["ssl_cost_kg"][3] <= be["supervised_cost_kg"][3]
    assert be["ssl_cost_kg"][2] > be["supervised_cost_kg"][2]
    assert carbon_report.break_even(6.0, 1.0, 1.0)["break_even_n"] == "never"
    assert carbon_report.break_even(6.0, 2.0, 1.0)["break_even_n_int"] == "never"
    assert carbon_report.break_even(0.0, 1.0, 1.0)["break_even_n"] == 0.0
    with pytest.raises(ValueError):
        carbon_report.break_even(-1.0, 1.0, 1.0)


def test_plots_write_png(tmp_path):
    clock = FakeClock()
    nvml = FakeNvml(n=1, energy_mj=[0])
    tr = carbon.Tracker(
        device_kind=H100, clock=clock, nvml=nvml, rapl_root=str(tmp_path), sample_interval_s=None
    )
    for name in ("pretrain", "finetune"):
        with tr.phase(name):
            clock.t += 60
    carbon_report.plot_phases(tr.summary(), tmp_path / "phases.png")
    carbon_report.plot_break_even(carbon_report.break_even(6, 0.5, 1), tmp_path / "be.png")
    carbon_report.plot_break_even(carbon_report.break_even(6, 2, 1), tmp_path / "never.png")
    for f in ("phases.png", "be.png", "never.png"):
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG"


def _segment(seconds: dict[str, float], measured: bool = False) -> dict:
    clock = FakeClock()
    nvml = FakeNvml(n=1, energy_mj=[0]) if measured else None
    tr = carbon.Tracker(
        device_kind=H100,
        n_devices=2,
        clock=clock,
        nvml=nvml,
        measure=measured,
        sample_interval_s=None,
        rapl_root="/nonexistent",
    )
    for name, s in seconds.items():
        with tr.phase(name):
            clock.t += s
    return tr.summary()


def test_ledger_totals_are_the_sums_over_segments(tmp_path):
    """carbon.json accumulates run segments; per phase and overall the totals are the sums
    (None where a segment lacks the number); the old single-summary file is one segment."""
    old = _segment({"pretrain": 100})
    (tmp_path / layout.CARBON_JSON).write_text(json.dumps(old))  # before segments existed
    assert carbon.read_ledger(tmp_path)["segments"] == [old]
    carbon.record_segment(tmp_path, _segment({"pretrain": 50, "probe": 5}), exit="preempted")
    ledger = carbon.record_segment(tmp_path, _segment({"pretrain": 25}), start="t0", end="t1")
    assert ledger == json.loads((tmp_path / layout.CARBON_JSON).read_text())
    segs, totals = ledger["segments"], ledger["totals"]
    assert len(segs) == 3 and segs[1]["exit"] == "preempted" and segs[2]["start"] == "t0"
    by_phase = {p["phase"]: p for p in totals["phases"]}
    assert by_phase["pretrain"]["time_s"] == 175 and by_phase["probe"]["time_s"] == 5
    for k in carbon.SUMMED:
        want = [s["total"][k] for s in segs]
        got = totals["total"][k]
        assert got is None if None in want else got == pytest.approx(sum(want)), k
    kwh = [p["model_kwh"] for s in segs for p in s["phases"] if p["phase"] == "pretrain"]
    assert by_phase["pretrain"]["model_kwh"] == pytest.approx(sum(kwh))
    assert totals["total"]["measured_kwh"] is None  # no sensor: unknown, not 0
    # `lusjax report`'s table shows the totals and one note per segment.
    table = carbon_report.report_table(ledger)
    assert "| **total** | **180** |" in table and table.count("- Segment ") == 3
    carbon_report.plot_phases(ledger, tmp_path / "c.png")
    assert carbon.read_ledger(tmp_path / "none") == {
        "segments": [],
        "totals": {"phases": [], "total": carbon.sum_rows("total", [])},
    }


def test_tracked_commands_add_a_segment_each(tmp_path):
    """prep / eval / predict account for themselves through carbon.tracked: each
    completed call appends one segment, and the totals are their sums."""
    for _ in range(2):
        with carbon.tracked(tmp_path, "prep", command="prep"):
            pass
    ledger = carbon.read_ledger(tmp_path)
    assert [s["command"] for s in ledger["segments"]] == ["prep", "prep"]
    prep = next(p for p in ledger["totals"]["phases"] if p["phase"] == "prep")
    assert prep["time_s"] == pytest.approx(
        sum(s["phases"][0]["time_s"] for s in ledger["segments"])
    )
    with pytest.raises(ValueError), carbon.tracked(tmp_path, "prep"):
        raise ValueError("failed: no output, no segment")
    assert len(carbon.read_ledger(tmp_path)["segments"]) == 2


def test_prep_records_its_energy(tmp_path):
    from data_prep import cli as prep_cli

    out = tmp_path / "d"
    assert (
        prep_cli.main(["--synthetic", "3", "--frames", "3", "--size", "16", "--out", str(out)]) == 0
    )
    ledger = carbon.read_ledger(out)
    assert [p["phase"] for p in ledger["totals"]["phases"]] == ["prep"]
    assert ledger["totals"]["total"]["model_kwh"] > 0
