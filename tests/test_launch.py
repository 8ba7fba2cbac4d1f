"""Sweeps and launchers: expansion, run names, the local runner (with a stand-in
for `lusjax train`), sweep-report, and the exact commands launch/*.sh print
with --dry-run (SLURM, TPU VM, local), quoting included."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lusjax import config as config_lib
from lusjax import sweep, sweep_plan, sweep_report
from lusjax.errors import UserError

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
TRICKY = "/data/my lus's $HOME"  # a space, a quote and a dollar: all must survive

CONFIG = """
import ml_collections

def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.method = "simclr"
    c.seed = 0
    c.total_steps = 4
    c.workdir = ""
    c.flag = False
    c.sizes = (1, 2)
    c.optim = ml_collections.ConfigDict({"lr": 0.1})
    c.data = ml_collections.ConfigDict({"data_dir": ""})
    return c
"""

SWEEP = f"""
from lusjax.sweep_plan import product

TRICKY = {TRICKY!r}

def get_sweep(arg=None):
    if arg == "tricky":
        return [{{"data.data_dir": TRICKY, "flag": True, "sizes": (3, 4)}}]
    if arg == "bad":
        return [{{"method": "simclr"}}, {{"method": "bad"}}, {{"method": "byol"}}]
    return product({{"method": ["simclr", "byol"], "optim.lr": [0.1, 0.3]}})
"""

# Stands in for `lusjax train`: writes what a run writes; method=bad fails.
FAKE_TRAIN = """
import json, sys
from pathlib import Path
ov = dict(a[len("--config."):].split("=", 1) for a in sys.argv[1:] if a.startswith("--config."))
wd = Path(ov["workdir"])
wd.mkdir(parents=True, exist_ok=True)
calls = wd / "calls"
calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
(wd / "config.json").write_text(json.dumps({"total_steps": 4, "method": ov.get("method")}))
if ov.get("method") == "bad":
    print("step 1 of 4")
    print("Traceback (most recent call last):", file=sys.stderr)
    print("ValueError: no such method 'bad'", file=sys.stderr)
    sys.exit(1)  # 3 would mean "preempted, resumable"
with open(wd / "metrics.jsonl", "a") as f:
    for step in (2, 4):
        f.write(json.dumps({"step": step, "loss": 2.0 / step, "probe_acc": 0.25 * step,
                            "images_per_s": 100.0, "model_kwh": 1e-4 * step,
                            "model_kg_co2e": 2e-5 * step}) + "\\n")
(wd / "encoder.json").write_text("{}")
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A config, a sweep file and a fake trainer in tmp_path (the cwd)."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.py").write_text(CONFIG)
    (tmp_path / "configs" / "tiny_sweep.py").write_text(SWEEP)
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def expand(project, arg="", root="runs/s"):
    spec = "configs/tiny_sweep.py" + (f":{arg}" if arg else "")
    return sweep_plan.expand("configs/tiny.py", spec, root, [("total_steps", "2")])


def fake_cmd(project):
    return [sys.executable, str(project / "fake_train.py")]


def sh(script, *args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_"))}
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        check=False,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
    )


def lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln and not ln.startswith("#")]


# ----------------------------------------------------------------------------
# Expansion and names.
# ----------------------------------------------------------------------------


def test_product_and_names():
    runs = sweep_plan.product({"method": ["simclr", "byol"], "optim.lr": [0.1, 0.3]})
    assert runs[1] == {"method": "simclr", "optim.lr": 0.3} and len(runs) == 4
    assert sweep.product is sweep_plan.product  # sweep files written as `from lusjax.sweep`
    assert sweep_plan.run_name({"optim.lr": 0.3, "method": "byol"}) == "method=byol,optim.lr=0.3"
    assert sweep_plan.run_name({"method": "byol", "optim.lr": 0.3}) == "method=byol,optim.lr=0.3"
    assert sweep_plan.run_name({}) == "base"
    assert sweep_plan.run_name({"data.data_dir": TRICKY}) == "data.data_dir=data-my-lus-s-HOME"
    assert sweep_plan.run_name({"sizes": (3, 4), "flag": True}) == "flag=true,sizes=3-4"
    long = sweep_plan.run_name({f"key{i}": "v" * 20 for i in range(10)})
    assert len(long) <= sweep_plan.MAX_NAME and long == sweep_plan.run_name(
        {f"key{i}": "v" * 20 for i in reversed(range(10))}
    )


@pytest.mark.parametrize("value", [True, False, 3, 0.1, 1e-5, "a b'c", (1, 2), [0.5]])
def test_override_text_round_trips_through_the_config(value):
    import ml_collections

    cfg = ml_collections.ConfigDict({"x": value})
    config_lib.apply_override(cfg, "x", sweep_plan.override_text(value))
    assert cfg.x == value and type(cfg.x) is type(value)


def test_expand(project):
    runs = expand(project)
    assert [r.name for r in runs] == [
        "method=simclr,optim.lr=0.1",
        "method=simclr,optim.lr=0.3",
        "method=byol,optim.lr=0.1",
        "method=byol,optim.lr=0.3",
    ]
    root = project / "runs" / "s"
    assert runs[3].workdir == str(root / "method=byol,optim.lr=0.3")
    assert runs[3].args == [
        "--config",
        "configs/tiny.py",
        "--config.total_steps=2",
        "--config.method=byol",
        "--config.optim.lr=0.3",
        f"--config.workdir={root}/method=byol,optim.lr=0.3",
    ]
    # The args are what `lusjax train` would load.
    overrides, rest = config_lib.split_overrides(runs[3].args)
    cfg = config_lib.load(rest[1], overrides)
    assert (cfg.method, cfg.optim.lr, cfg.total_steps, cfg.workdir) == (
        "byol",
        0.3,
        2,
        runs[3].workdir,
    )
    # gs:// roots are kept as they are.
    gs = sweep_plan.expand("configs/tiny.py", "configs/tiny_sweep.py", "gs://b/sw/")
    assert gs[0].workdir == "gs://b/sw/method=simclr,optim.lr=0.1"


def test_expand_rejects_bad_sweeps(project):
    (project / "bad.py").write_text("def get_sweep():\n    return [{'optim.lrr': 1.0}]\n")
    with pytest.raises(UserError, match="did you mean optim.lr"):
        sweep_plan.expand("configs/tiny.py", "bad.py", "runs/x")
    (project / "bad.py").write_text("def get_sweep():\n    return [{'seed': 0.5}]\n")
    with pytest.raises(UserError, match="expects an integer"):
        sweep_plan.expand("configs/tiny.py", "bad.py", "runs/x")
    (project / "bad.py").write_text("def get_sweep():\n    return [{'seed': 1}, {'seed': 1}]\n")
    with pytest.raises(UserError, match="same overrides"):
        sweep_plan.expand("configs/tiny.py", "bad.py", "runs/x")
    (project / "bad.py").write_text("def get_sweep():\n    return [{'workdir': '/x'}]\n")
    with pytest.raises(UserError, match="workdir"):
        sweep_plan.expand("configs/tiny.py", "bad.py", "runs/x")
    with pytest.raises(UserError, match="not found"):
        sweep_plan.expand("configs/tiny.py", "nope.py", "runs/x")


def test_names_that_clean_to_the_same_folder_get_a_hash(project):
    (project / "clash.py").write_text(
        "def get_sweep():\n    return [{'data.data_dir': 'a b'}, {'data.data_dir': 'a/b'}]\n"
    )
    a, b = sweep_plan.expand("configs/tiny.py", "clash.py", "runs/x")
    assert a.name != b.name and a.name.startswith("data.data_dir=a-b-")
    assert a.args[-1] == f"--config.workdir={a.workdir}" and a.workdir.endswith(a.name)


def test_example_sweeps_load():
    assert len(sweep_plan.load_sweep(str(REPO / "configs/sweeps/quick_sweep.py"))) == 4
    assert len(sweep_plan.load_sweep(str(REPO / "configs/sweeps/pod_sweep.py"))) == 8
    assert len(sweep_plan.load_sweep(str(REPO / "configs/sweeps/pod_sweep.py") + ":small")) == 2


def test_a_run_may_name_its_own_config(project):
    (project / "configs" / "other.py").write_text(CONFIG.replace('"simclr"', '"byol"'))
    (project / "per_run.py").write_text(
        "def get_sweep():\n    return [{'config': 'configs/other.py', 'seed': 1}, {'seed': 1}]\n"
    )
    a, b = sweep_plan.expand("configs/tiny.py", "per_run.py", "runs/x")
    assert (a.name, b.name) == ("config=other,seed=1", "seed=1")
    assert a.args[:2] == ["--config", "configs/other.py"] and "--config.config" not in a.args[2]
    assert b.args[:2] == ["--config", "configs/tiny.py"]
    with pytest.raises(UserError, match="no config"):
        sweep_plan.expand(None, "per_run.py", "runs/x")


# ----------------------------------------------------------------------------
# Local runner, resume, report.
# ----------------------------------------------------------------------------


def test_run_local_skips_done_retries_failed_and_reports(project, capsys):
    runs = expand(project, "bad")
    out = []
    assert sweep.run_local(runs, train_cmd=fake_cmd(project), echo=out.append) == 1
    status = {r.name: sweep_plan.run_status(r.workdir) for r in runs}
    assert status["method=simclr"] == ("done", "")
    assert status["method=bad"][0] == "failed"
    assert status["method=bad"][1] == "exit 1: ValueError: no such method 'bad'"
    assert "1 failed: method=bad" in out[-1]
    log = (Path(runs[1].workdir) / "run.log").read_text()
    assert "step 1 of 4" in log and "### lusjax sweep" in log

    # Again: finished runs are skipped, the failed one is tried again.
    out.clear()
    assert sweep.run_local(runs, train_cmd=fake_cmd(project), echo=out.append) == 1
    calls = {r.name: int((Path(r.workdir) / "calls").read_text()) for r in runs}
    assert calls == {"method=simclr": 1, "method=bad": 2, "method=byol": 1}
    assert any("done, skipped" in o for o in out)

    # A partial run (metrics, no encoder, idle) and one never started.
    (project / "runs/s/method=byol/encoder.json").unlink()
    os.utime(project / "runs/s/method=byol/metrics.jsonl", (1, 1))
    os.utime(project / "runs/s/method=byol/run.log", (1, 1))
    (project / "runs/s/method=byol/run.rc").unlink()
    sweep_plan.write_plan(
        str(project / "runs/s"),
        runs + expand(project, "tricky"),
        "configs/tiny.py",
        "configs/tiny_sweep.py",
        [],
    )
    result = sweep_report.render(str(project / "runs/s"))
    rows = {r["name"]: r for r in result["rows"]}
    assert [r["status"] for r in result["rows"]] == ["done", "failed", "partial", "not started"]
    assert rows["method=simclr"]["final"]["loss"] == 0.5 and rows["method=simclr"]["step"] == 4
    table = result["table"]
    assert (
        "| 1 | method=simclr | done | 4/4 | 0.5000 | 1.000 |  | 100.0 | 0.0004 | 8e-05 |" in table
    )
    assert "failed" in table and "ValueError: no such method 'bad'" in table
    assert "data.data_dir=/data/my lus's $HOME, flag=true, sizes=[3, 4]" in table
    assert Path(result["md"]).read_text().startswith("# Sweep report")
    assert Path(result["png"]).stat().st_size > 1000


def test_report_without_sweep_json_uses_differing_config_values(project):
    for name, lr in (("a", 0.1), ("b", 0.3)):
        wd = project / "runs/loose" / name
        wd.mkdir(parents=True)
        (wd / "config.json").write_text(
            json.dumps({"optim": {"lr": lr}, "seed": 0, "workdir": str(wd)})
        )
    rows = sweep_report.collect(str(project / "runs/loose"))
    assert [r["overrides"] for r in rows] == [{"optim.lr": 0.1}, {"optim.lr": 0.3}]
    with pytest.raises(UserError, match="no such sweep root"):
        sweep_report.collect(str(project / "nope"))


def test_sweep_main_modes(project, capsys):
    base = [
        "--config",
        "configs/tiny.py",
        "--sweep",
        "configs/tiny_sweep.py",
        "--root",
        "runs/m",
        "--config.total_steps=2",
    ]
    # Listing writes nothing.
    assert sweep.main(base + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs" in out and "not started  method=byol,optim.lr=0.3" in out
    assert not (project / "runs/m").exists()
    # --run --dry-run prints the train commands only.
    assert sweep.main(base + ["--run", "--dry-run"]) == 0
    cmds = [shlex.split(c) for c in lines(capsys.readouterr().out)[1:]]
    assert len(cmds) == 4
    assert cmds[0][1:] == [
        "-m",
        "lusjax.cli",
        "train",
        "--quiet",
        "--config",
        "configs/tiny.py",
        "--config.total_steps=2",
        "--config.method=simclr",
        "--config.optim.lr=0.1",
        f"--config.workdir={project}/runs/m/method=simclr,optim.lr=0.1",
    ]
    assert not (project / "runs/m").exists()
    # --emit writes sweep.json + runs.txt and prints the launcher command.
    assert sweep.main(base + ["--emit", "slurm"]) == 0
    out = capsys.readouterr().out
    runs_file = project / "runs/m/runs.txt"
    assert lines(out)[-1] == f"bash {LAUNCH / 'slurm.sh'} {runs_file}"
    plan = json.loads((project / "runs/m/sweep.json").read_text())
    assert plan["common"] == ["--config.total_steps=2"] and len(plan["runs"]) == 4
    assert sweep.main(base + ["--emit", "tpu", "--dry-run"]) == 0
    assert "--name $TPU_NAME --zone $ZONE" in capsys.readouterr().out
    with pytest.raises(UserError, match="workdir"):
        sweep.main(base + ["--config.workdir=/x"])


# ----------------------------------------------------------------------------
# launch/*.sh --dry-run.
# ----------------------------------------------------------------------------


@pytest.fixture
def runs_file(project):
    runs = expand(project) + expand(project, "tricky")
    return sweep_plan.write_plan(
        str(project / "runs/s"),
        runs,
        "configs/tiny.py",
        "configs/tiny_sweep.py",
        [("total_steps", "2")],
    ), runs


def test_slurm_submit_dry_run(runs_file, project):
    path, _ = runs_file
    r = sh(
        "slurm.sh",
        "--dry-run",
        "--max-parallel",
        "2",
        "--nodes=2",
        "--partition",
        "gpu p",
        str(path),
        cwd=project,
    )
    assert r.returncode == 0, r.stderr
    mkdir, sbatch = [shlex.split(ln) for ln in lines(r.stdout)]
    logs = str(project / "runs/s/slurm-logs")
    assert mkdir == ["mkdir", "-p", logs]
    assert sbatch == [
        "sbatch",
        "--array=0-4%2",
        f"--chdir={project}",
        f"--output={logs}/%x-%A_%a.out",
        "--nodes=2",
        "--partition",
        "gpu p",
        str(LAUNCH / "slurm.sh"),
        str(path),
    ]
    assert not Path(logs).exists()  # dry run: nothing made


def test_slurm_task_dry_run_runs_its_line_on_every_node(runs_file, project):
    path, runs = runs_file
    env = {
        "SLURM_JOB_ID": "77",
        "SLURM_ARRAY_TASK_ID": "4",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_CPUS_PER_TASK": "16",
        "SLURM_SUBMIT_DIR": str(project),
    }
    r = sh("slurm.sh", "--dry-run", str(path), env=env)
    assert r.returncode == 0, r.stderr
    (srun,) = [shlex.split(ln) for ln in lines(r.stdout)]
    assert srun == [
        "srun",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        "--cpus-per-task=16",
        "lusjax",
        "train",
        "--quiet",
        *runs[4].args,
    ]
    assert f"--config.data.data_dir={TRICKY}" in srun
    # A finished run is skipped; LUSJAX_BIN changes the command.
    Path(runs[0].workdir).mkdir(parents=True)
    (Path(runs[0].workdir) / "encoder.json").write_text("{}")
    r = sh("slurm.sh", "--dry-run", str(path), env={**env, "SLURM_ARRAY_TASK_ID": "0"})
    assert lines(r.stdout) == [] and "# skip method=simclr,optim.lr=0.1: done" in r.stdout
    r = sh(
        "slurm.sh",
        "--dry-run",
        str(path),
        env={**env, "SLURM_ARRAY_TASK_ID": "1", "LUSJAX_BIN": "python -m lusjax.cli"},
    )
    assert shlex.split(lines(r.stdout)[0])[6:10] == ["python", "-m", "lusjax.cli", "train"]
    r = sh("slurm.sh", "--dry-run", str(path), env={**env, "SLURM_ARRAY_TASK_ID": "9"})
    assert r.returncode == 2 and "no run number 9" in r.stderr


def test_slurm_single_run_and_errors(project):
    r = sh(
        "slurm.sh",
        "--dry-run",
        "--time=1:00:00",
        "--",
        "--config",
        "c.py",
        f"--config.data.data_dir={TRICKY}",
        cwd=project,
    )
    assert shlex.split(lines(r.stdout)[0]) == [
        "sbatch",
        f"--chdir={project}",
        "--time=1:00:00",
        str(LAUNCH / "slurm.sh"),
        "--",
        "--config",
        "c.py",
        f"--config.data.data_dir={TRICKY}",
    ]
    r = sh(
        "slurm.sh",
        "--dry-run",
        "--",
        "--config",
        "c.py",
        env={"SLURM_JOB_ID": "1", "SLURM_NNODES": "3"},
    )
    assert shlex.split(lines(r.stdout)[0])[:3] == ["srun", "--nodes=3", "--ntasks=3"]
    assert sh("slurm.sh", "--dry-run").returncode == 2
    assert "not found" in sh("slurm.sh", "--dry-run", "missing.txt").stderr
    assert "#SBATCH" not in sh("slurm.sh", "--help").stdout


def test_tpu_vm_dry_run(runs_file, project):
    path, runs = runs_file
    r = sh(
        "tpu_vm.sh",
        "--dry-run",
        "--name",
        "my-pod",
        "--zone",
        "us-central2-b",
        "--project",
        "proj",
        str(path),
    )
    assert r.returncode == 0, r.stderr
    cmds = [shlex.split(ln) for ln in lines(r.stdout)]
    assert len(cmds) == 5
    for cmd, run in zip(cmds, runs):
        assert cmd[:11] == [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "ssh",
            "my-pod",
            "--zone",
            "us-central2-b",
            "--project",
            "proj",
            "--worker=all",
        ]
        assert cmd[11] == "--command" and len(cmd) == 13
        remote = shlex.split(cmd[12])  # what each host's shell runs
        i = remote.index("LUSJAX_DISTRIBUTED=auto")
        assert remote[:2] == ["cd", "lusjax"]
        assert remote[i + 1 :] == ["lusjax", "train", "--quiet", *run.args]
    # local workdirs are flagged: a pod needs gs://
    assert "not on gs://" in r.stderr
    r = sh(
        "tpu_vm.sh",
        "--dry-run",
        "--name=t",
        "--zone=z",
        "--remote-dir",
        "src/lus jax",
        "--setup",
        "source ~/env/bin/activate",
        "--",
        "--config",
        "c.py",
        "--config.workdir=gs://b/run",
    )
    (cmd,) = [shlex.split(ln) for ln in lines(r.stdout)]
    assert "--project" not in cmd
    assert cmd[-1] == (
        "cd 'src/lus jax' && source ~/env/bin/activate && LUSJAX_DISTRIBUTED=auto "
        "lusjax train --quiet --config c.py --config.workdir=gs://b/run"
    )
    assert r.stderr == ""
    r = sh("tpu_vm.sh", "--dry-run", str(path), env={"TPU_NAME": "", "ZONE": ""})
    assert r.returncode == 2 and "--name" in r.stderr
    r = sh("tpu_vm.sh", "--dry-run", str(path), env={"TPU_NAME": "env-pod", "ZONE": "zz"})
    assert shlex.split(lines(r.stdout)[0])[5:8] == ["env-pod", "--zone", "zz"]


def test_local_dry_run(runs_file, project):
    path, runs = runs_file
    r = sh("local.sh", "--dry-run", str(path))
    assert [shlex.split(ln) for ln in lines(r.stdout)] == [
        ["lusjax", "train", "--quiet", *run.args] for run in runs
    ]
    r = sh(
        "local.sh", "--dry-run", "--procs", "2", "--cpu-devices", "2", "--port", "4321", str(path)
    )
    out = lines(r.stdout)
    assert len(out) == 3 * len(runs) and out[2] == "wait"
    for i in range(2):
        assert shlex.split(out[i]) == [
            "env",
            "LUSJAX_COORDINATOR=localhost:4321",
            "LUSJAX_NUM_PROCESSES=2",
            f"LUSJAX_PROCESS_ID={i}",
            "LUSJAX_CPU_DEVICES=2",
            "lusjax",
            "train",
            "--quiet",
            *runs[0].args,
            "&",
        ]


FAKE_BIN = """
import json, os, sys
from pathlib import Path
args = sys.argv[2:]  # after "train"
wd = Path([a.split("=", 1)[1] for a in args if a.startswith("--config.workdir=")][0])
pid = os.environ.get("LUSJAX_PROCESS_ID", "0")
(wd / f"env{pid}.json").write_text(json.dumps(
    {k: v for k, v in os.environ.items() if k.startswith("LUSJAX_")}))
if "--config.method=byol" in args:
    print("RuntimeError: boom", file=sys.stderr)
    sys.exit(5)
if pid == "0":
    (wd / "encoder.json").write_text("{}")
"""


def test_local_sh_runs_and_records_status(runs_file, project):
    path, runs = runs_file
    (project / "fake_bin.py").write_text(FAKE_BIN)
    env = {"LUSJAX_BIN": f"{sys.executable} {project / 'fake_bin.py'}"}
    r = sh("local.sh", "--procs", "2", "--cpu-devices", "3", str(path), env=env)
    assert r.returncode == 1 and "2 of 5 run(s) failed" in r.stderr
    st = [sweep_plan.run_status(run.workdir) for run in runs]
    assert [s for s, _ in st] == ["done", "done", "failed", "failed", "done"]
    assert st[2][1] == "exit 5: RuntimeError: boom"
    seen = json.loads((Path(runs[0].workdir) / "env1.json").read_text())
    assert seen["LUSJAX_NUM_PROCESSES"] == "2" and seen["LUSJAX_PROCESS_ID"] == "1"
    assert seen["LUSJAX_CPU_DEVICES"] == "3" and seen["LUSJAX_COORDINATOR"].startswith("localhost:")
    r = sh("local.sh", str(path), env=env)  # again: done ones skipped
    assert r.stdout.count("# skip") == 3 and r.returncode == 1


def test_scripts_are_valid_bash():
    for script in ("slurm.sh", "tpu_vm.sh", "local.sh"):
        assert subprocess.run(["bash", "-n", str(LAUNCH / script)], check=False).returncode == 0
        text = (LAUNCH / script).read_text()
        assert "--dry-run" in text and text.startswith("#!/usr/bin/env bash")


# ----------------------------------------------------------------------------
# The real thing: a 4-run sweep of the quickstart config on synthetic data.
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_sweep_end_to_end(tmp_path):
    root = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "lusjax.sweep",
        "--config",
        "configs/quickstart.py",
        "--sweep",
        "configs/sweeps/quick_sweep.py",
        "--root",
        str(root),
        "--run",
        "--config.total_steps=4",
        "--config.log_every=2",
        "--config.batch_size=32",
        "--config.probe.eval_every=4",
        "--config.probe.eval_frames=64",
    ]
    env = {**os.environ, "LUSJAX_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(
        cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=900, env=env
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = sweep_report.collect(str(root))
    assert [row["status"] for row in rows] == ["done"] * 4
    assert all(row["final"]["step"] == 4 for row in rows)
    assert all(
        0 <= row["final"]["probe_val_acc"] <= 1 and row["final"]["model_kwh"] > 0 for row in rows
    )
    r = subprocess.run(
        [sys.executable, "-m", "lusjax.sweep_report", str(root)],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "4 runs: 4 done" in r.stdout
    assert (root / "sweep_report.png").exists()
