"""The learning curve's bookkeeping: resumable run log, summary, table and plot (no training here)."""

import json
import os
import shutil

import numpy as np
import pytest

from keras_adapterfusion.applications import learning_curve as lc

pytestmark = pytest.mark.backend_independent


def _row(setup, size, seed, acc):
    return {"setup": setup, "size": size, "seed": seed, "epochs": 3, "test": {"accuracy": acc}, "seconds": 2.0}


def test_epochs_give_the_smallest_sets_enough_steps():
    cfg = lc.CurveConfig(batch_size=16, min_epochs=3, min_steps=60)
    assert cfg.epochs(50) == 15      # 4 batches per epoch -> 15 epochs = 60 steps
    assert cfg.epochs(1000) == 3     # 63 batches: the minimum number of epochs
    assert cfg.epochs(300) == 4      # 19 batches -> ceil(60 / 19)


def test_summary_table_and_plot_from_the_run_log(tmp_path):
    rows = [_row("st_a", 50, 0, 0.70), _row("st_a", 50, 1, 0.74), _row("fusion_st_a", 50, 0, 0.80),
            _row("fusion_st_a", 50, 1, 0.78), _row("st_a", 100, 0, 0.81)]
    with open(tmp_path / "runs.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
        f.write('{"setup": "st_a", "size": 100, "se')  # a line cut by a kill is ignored (that run is redone)
    runs = lc._read_runs(str(tmp_path / "runs.jsonl"))
    assert len(runs) == 5
    cfg = lc.CurveConfig(sizes=(50, 100), seeds=2)
    summary = lc.write_summary(str(tmp_path), cfg, "accuracy")
    assert summary["st_a"][50]["mean"] == pytest.approx(0.72)
    assert summary["st_a"][50]["std"] == pytest.approx(np.std([0.70, 0.74], ddof=1))
    assert summary["st_a"][100]["std"] == 0.0 and summary["st_a"][100]["values"] == [0.81]
    assert list(summary) == ["st_a", "fusion_st_a"]  # the order of SETUPS
    table = (tmp_path / "learning_curve.md").read_text()
    assert "| Fusion w/ ST-A | **79.0 ± 1.4** | – |" in table
    assert "| ST-A | 72.0 ± 2.8 | **81.0 ± 0.0** |" in table
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["st_a"]["50"]["values"] == [0.70, 0.74]


def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        lc.main(["--output-dir", str(tmp_path), "--setups", "fusion,st_a"])
    assert "--setups: unknown ['fusion']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lc.main(["--output-dir", str(tmp_path), "--setups", "fusion_tuned"])
    assert "fusion_tuned needs --tuned-fusion" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'fusion_tuned' needs tuned_fusion"):
        lc.run_learning_curve(str(tmp_path), setups=("fusion_tuned",))
    assert not (tmp_path / "runs.jsonl").exists()


def test_the_tuned_set_up_is_read_from_tunes_best_trial(tmp_path):
    config = {"dropout_prob": 0.0, "residual_before": True, "value_initialized": False,
              "regularization": False, "regularization_weight": 0.0}
    trial = {"adapters": ["subjectivity", "bbc_topic"], "fusion_config": config,
             "values": {"learning_rate": 0.0013, "preset": "dynamic"}}
    path = tmp_path / "best_trial.json"
    path.write_text(json.dumps(trial))
    setup = lc.tuned_setup(str(path))
    assert setup == {"fusion_config": config, "learning_rate": 0.0013, "adapters": ["subjectivity", "bbc_topic"]}
    # the target task's name is the target's own adapter ("target" in the curve)
    trial["adapters"] = ["vader_tweets", "bbc_topic"]
    assert lc.tuned_setup(trial)["adapters"] == ["target", "bbc_topic"]
    # a bare fusion config: as fusion_st_a, all the sources and the target's adapter at its learning rate
    bare = lc.tuned_setup(config)
    assert bare["learning_rate"] == lc.CurveConfig().learning_rates["fusion_st_a"]
    assert bare["adapters"] == [*lc.CurveConfig().sources, "target"]
    assert lc.tuned_setup("static")["fusion_config"] == "static"


@pytest.mark.parametrize("bad, message", [
    ({"fusion_config": {}, "adapters": ["imdb"]}, r"adapters is \['imdb'\]; expected a non-empty list"),
    ({"fusion_config": {}, "adapters": []}, r"adapters is \[\]"),
    ({"fusion_config": {}, "values": {"learning_rate": 0}}, r"values.learning_rate is 0; expected a number"),
    ({"fusion_config": {"dropout_prob": 2.0}}, "fusion_config is not a fusion config"),
    ({"fusion_config": "turbo"}, "fusion_config is not a fusion config"),
])
def test_a_bad_tuned_set_up_names_its_field(tmp_path, bad, message):
    path = tmp_path / "best_trial.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=message) as info:
        lc.tuned_setup(str(path))
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="is not a file"):
        lc.tuned_setup(str(tmp_path / "missing.json"))
    (tmp_path / "cut.json").write_text('{"fusion_config": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        lc.tuned_setup(str(tmp_path / "cut.json"))


@pytest.mark.slow
def test_a_tiny_curve_runs_the_tuned_set_ups_end_to_end(tmp_path):
    """The real loop on the tiny encoder: ST-A, fusion, and tuned set-ups of one adapter and of several."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    from _smoke import tiny_checkpoint

    encoder = tiny_checkpoint(str(tmp_path / "encoder"))
    config = lc.CurveConfig(sizes=(12,), seeds=1, source_train=16, source_epochs=1, min_epochs=1, min_steps=1,
                            max_length=16, batch_size=8)
    one = {"fusion_config": "dynamic", "values": {"learning_rate": 1e-3}, "adapters": ["vader_tweets"]}
    lc.run_learning_curve(str(tmp_path / "one"), config, ("st_a", "fusion_tuned"), encoder, tuned_fusion=one)
    shutil.copytree(tmp_path / "one" / "sources", tmp_path / "several" / "sources")  # trained once
    several = {"fusion_config": {"value_initialized": False, "residual_before": True},
               "values": {"learning_rate": 1e-3}, "adapters": ["bbc_topic", "vader_tweets"]}
    summary = lc.run_learning_curve(str(tmp_path / "several"), config, ("fusion_st_a", "fusion_tuned"), encoder,
                                    tuned_fusion=several)
    assert set(summary) == {"fusion_st_a", "fusion_tuned"}
    for name in ("one", "several"):
        rows = lc._read_runs(str(tmp_path / name / "runs.jsonl"))
        assert {r["setup"] for r in rows} >= {"fusion_tuned"}
        assert all(0.0 <= r["test"]["accuracy"] <= 1.0 and r["size"] == 12 and r["seed"] == 0 for r in rows)
