"""benchmarks/study_table.py: the ablation table of study.json files and its best row."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks/results/2026-12-07-study-h100"
spec = importlib.util.spec_from_file_location("study_table", ROOT / "benchmarks/study_table.py")
study_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study_table)


def test_the_committed_ablation_table_and_its_best_row(tmp_path, capsys):
    paths = sorted(str(p) for p in RESULTS.glob("ablation/*/study.json"))
    paths.append(str(RESULTS / "final_base/study.json"))
    out_json = tmp_path / "rows.json"
    assert study_table.main([*paths, "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    # The README's numbers come from here: the base row wins at 10% labels.
    assert "best at 10% labels (linear): base (55.6% balanced accuracy)" in text
    assert "| steps1500 | simclr | resnet18 | 128 | 0.5 s | on | 1500 | 0,1,2 |" in text
    assert "scratch fine-tune (from final_base)" in text
    rows = json.loads(out_json.read_text())
    assert {r["name"] for r in rows} >= {"base", "byol", "vicreg", "final_base"}


def test_unreadable_files_are_named_and_none_is_an_error(tmp_path, capsys):
    bad = tmp_path / "x" / "study.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    assert study_table.main([str(bad), str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert f"skipped {bad}" in err and "no readable study.json" in err
