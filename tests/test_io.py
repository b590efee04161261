"""The one directory writer, the one weight loader, strict JSON reads (keras_adapterfusion.io)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_adapterfusion.errors import CheckpointError, SaveError
from keras_adapterfusion.io import (
    WeightRow,
    atomic_file,
    check_destination,
    json_field,
    read_json,
    saved_directory,
    stage_weights,
    write_directory,
)
from keras_adapterfusion.io.directories import MANIFEST, old_path, staging_path

pytestmark = pytest.mark.backend_independent  # no backend changes what it tests: the TensorFlow pass runs it

CRASH_SAVE = os.path.join(os.path.dirname(__file__), "scripts", "crash_save.py")
FILES = ("module.json", "weights.safetensors", os.path.join("nested", "part"))


def _save(target, content, kind="adapter"):
    with write_directory(target, kind) as tmp:
        for name in FILES:
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
            with open(os.path.join(tmp, name), "w") as f:
                f.write(content)


def _content(directory):
    """The one content all files of a complete save hold; fails on a partial or mixed save."""
    assert os.path.isfile(os.path.join(directory, MANIFEST)), os.listdir(directory)
    values = {open(os.path.join(directory, name)).read() for name in FILES}
    assert len(values) == 1, values
    return values.pop()


# ------------------------------------------------------------- refusals
@pytest.mark.parametrize("bad", ["", ".", "./", "/"])
def test_current_directory_and_root_are_refused(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SaveError, match="save directory"):
        _save(bad, "x")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_directory_of_foreign_files_is_never_replaced(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('mine')")
    with pytest.raises(SaveError, match="did not write") as e:
        _save(project, "x")
    assert "train.py" in str(e.value)
    assert sorted(os.listdir(project)) == ["train.py"]
    assert sorted(os.listdir(tmp_path)) == ["project"]


def test_a_save_with_a_foreign_file_added_is_not_replaced(tmp_path):
    target = tmp_path / "a"
    _save(target, "one")
    (target / "my_notes.md").write_text("keep me")
    with pytest.raises(SaveError, match="my_notes.md"):
        _save(target, "two")
    assert _content(target) == "one" and (target / "my_notes.md").read_text() == "keep me"


def test_another_kind_of_save_is_not_replaced(tmp_path):
    target = tmp_path / "a"
    _save(target, "one", kind="run")
    with pytest.raises(SaveError, match="holds a saved 'run'"):
        _save(target, "two", kind="adapter")
    assert _content(target) == "one"


def test_a_file_is_not_replaced_by_a_directory(tmp_path):
    (tmp_path / "a").write_text("file")
    with pytest.raises(SaveError, match="not a directory"):
        _save(tmp_path / "a", "x")


def test_replace_false_needs_a_new_or_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with write_directory(tmp_path / "empty", "saved-model", replace=False) as tmp:
        open(os.path.join(tmp, "f"), "w").close()
    with pytest.raises(SaveError, match="not empty"):
        with write_directory(tmp_path / "empty", "saved-model", replace=False):
            pass


def test_uncreatable_destination_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SaveError, match="cannot be created"):
        check_destination(tmp_path / "file" / "below", "run")


# --------------------------------------------------------- replacing saves
def test_earlier_save_of_the_same_kind_is_replaced_and_nothing_is_left_over(tmp_path):
    target = tmp_path / "a"
    _save(target, "one")
    _save(target, "two")
    assert _content(target) == "two"
    assert sorted(os.listdir(tmp_path)) == ["a"]
    manifest = json.load(open(target / MANIFEST))
    assert manifest["kind"] == "adapter" and sorted(manifest["files"]) == sorted(
        f.replace(os.sep, "/") for f in FILES)


def test_an_error_while_writing_leaves_the_earlier_save(tmp_path):
    target = tmp_path / "a"
    _save(target, "one")
    with pytest.raises(RuntimeError, match="disk full"):
        with write_directory(target, "adapter") as tmp:
            open(os.path.join(tmp, "module.json"), "w").write("half")
            raise RuntimeError("disk full")
    assert _content(target) == "one"
    assert sorted(os.listdir(tmp_path)) == ["a"]


def _run_crash_save(target, content, kill_at=None, record=None):
    command = [sys.executable, CRASH_SAVE, str(target), content]
    if kill_at is not None:
        command += ["--kill-at", str(kill_at)]
    if record is not None:
        command += ["--record", str(record)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _steps(tmp_path, replacing):
    """The file-system steps of a save, recorded in a dry run."""
    rehearsal = tmp_path / "rehearsal"
    rehearsal.mkdir()
    target = rehearsal / "a"
    if replacing:
        _save(target, "old")
    record = tmp_path / "steps.txt"
    assert _run_crash_save(target, "new", record=record).returncode == 0
    return record.read_text().split()


@pytest.mark.parametrize("replacing", [True, False])
def test_kill_at_every_file_system_step_loses_nothing(tmp_path, replacing):
    """SIGKILL a saving process at each step: the path (or a sibling that `saved_directory`
    finds) holds the earlier save or the new one, and the next save cleans up."""
    steps = _steps(tmp_path, replacing)
    assert "swap:move-in" in steps and "stage:manifest" in steps
    if replacing:
        assert "swap:move-aside" in steps and any(s.startswith("swap:remove-old:unlink") for s in steps)
    outcomes = {}
    for k, step in enumerate(steps):
        work = tmp_path / f"k{k}"
        work.mkdir()
        target = work / "a"
        if replacing:
            _save(target, "old")
        done = _run_crash_save(target, "new", kill_at=k)
        assert done.returncode == -9, (step, done.returncode, done.stderr[-500:])
        found = saved_directory(target)
        if not replacing and not os.path.isfile(os.path.join(found, MANIFEST)):
            outcomes[step] = None  # a first save killed before it completed: there was nothing to lose
        else:
            outcomes[step] = _content(found)
            assert outcomes[step] in ("old", "new") if replacing else outcomes[step] == "new", (step, outcomes[step])
        _save(target, "next")  # the next save finishes or rolls back the swap and removes every leftover
        assert _content(target) == "next", step
        assert sorted(os.listdir(work)) == ["a"], (step, os.listdir(work))
    # Kills before the manifest is written keep the earlier save; from then on the new one is complete.
    assert outcomes[steps[0]] == outcomes["stage:manifest"] == ("old" if replacing else None)
    assert outcomes["swap:move-in"] == outcomes[steps[-1]] == "new"


def test_saved_directory_finds_a_complete_sibling(tmp_path):
    target = tmp_path / "a"
    _save(target, "old")
    os.rename(target, old_path(str(target)))
    assert _content(saved_directory(target)) == "old"
    _save(tmp_path / "b", "new")
    os.rename(tmp_path / "b", staging_path(str(target)))
    assert _content(saved_directory(target)) == "new"  # the complete new save wins over the earlier one


# ------------------------------------------------------------ single files
def test_atomic_file_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["model.keras"]
    with atomic_file(path) as tmp:
        assert tmp.endswith(".keras")
        open(tmp, "w").write("new")
    assert path.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["model.keras"]


@pytest.mark.parametrize("raw, message", [
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "holds a JSON list"),
    (b'"abc"', "holds a JSON str"),
])
def test_read_json_names_file_and_problem(tmp_path, raw, message):
    path = tmp_path / "config.json"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=message) as e:
        read_json(path, "a config")
    assert str(path) in str(e.value)


def test_read_json_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing; expected the a config"):
        read_json(tmp_path / "nope.json", "a config")


@pytest.mark.parametrize("data, kind, message", [
    ({}, int, "field 'n' is missing"),
    ({"n": "abc"}, int, "field 'n' is 'abc'; expected an integer"),
    ({"n": True}, int, "field 'n' is True"),
    ({"n": 1.5}, int, "field 'n' is 1.5"),
    ({"n": float("nan")}, float, "field 'n' is nan"),
    ({"n": 0}, int, "field 'n' is 0; expected positive"),
])
def test_json_field_names_the_field(data, kind, message):
    with pytest.raises(CheckpointError, match=message):
        json_field(data, "n", "f.json", kind, check=lambda v: v > 0, expected="positive")


def test_json_field_accepts_ints_for_floats_and_defaults():
    assert json_field({"n": 2}, "n", "f.json", float) == 2
    assert json_field({}, "n", "f.json", float, default=0.5) == 0.5


# ------------------------------------------------------------ weight loader
class _Variable:
    def __init__(self, shape):
        self.shape = shape
        self.dtype = "float32"
        self.value = None

    def assign(self, value):
        self.value = value


def _rows():
    return [WeightRow("w", (3, 2), _Variable((3, 2)), "transpose"), WeightRow("b", (2,), _Variable((2,)))]


GOOD = {"w": np.arange(6, dtype="float32").reshape(2, 3), "b": np.zeros(2, "float32")}


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("b"), "missing 1 tensor"),
    (lambda t: t.update(extra=np.zeros(1, "float32")), "unexpected tensor"),
    (lambda t: t.update(b=np.zeros(2, "int64")), "dtype int64; expected floating-point"),
    (lambda t: t.update(b=np.zeros(3, "float32")), "'b' has shape \\[3\\]; expected \\[2\\]"),
    (lambda t: t.update(w=np.zeros((3, 2), "float32")), "'w' has shape \\[3, 2\\]; expected \\[2, 3\\]"),
    (lambda t: t.update(w=np.zeros(6, "float32")), "expected a matrix"),
    (lambda t: t.update(b=np.array([0.0, np.nan], "float32")), "1 NaN or infinite"),
    (lambda t: t.update(b=np.array([np.inf, -np.inf], "float32")), "2 NaN or infinite"),
])
def test_every_tensor_is_checked_before_any_is_assigned(change, message):
    tensors = {k: v.copy() for k, v in GOOD.items()}
    change(tensors)
    rows = _rows()
    with pytest.raises(CheckpointError, match=message) as e:
        stage_weights(rows, tensors, "/x/weights.safetensors").assign()
    assert "/x/weights.safetensors" in str(e.value)
    assert all(row.target.value is None for row in rows)


def test_loader_transposes_and_allows_nonfinite_on_request():
    rows = _rows()
    tensors = dict(GOOD, b=np.array([np.nan, 1.0], "float32"))
    stage_weights(rows, tensors, "f", allow_nonfinite=True).assign()
    np.testing.assert_array_equal(rows[0].target.value, GOOD["w"].T)
    assert np.isnan(rows[1].target.value[0])


def test_a_file_added_to_a_save_keeps_it_replaceable(tmp_path):
    from keras_adapterfusion.io.directories import add_to_save

    target = tmp_path / "run"
    _save(target, "one", kind="run")
    add_to_save(target, "metrics_extra.json", lambda tmp: open(tmp, "w").write("{}"))
    assert (target / "metrics_extra.json").read_text() == "{}"
    _save(target, "two", kind="run")  # not refused: the added file is listed in the manifest
    assert _content(target) == "two" and not (target / "metrics_extra.json").exists()
    with pytest.raises(SaveError, match="is not a save"):
        add_to_save(tmp_path, "x.json", lambda tmp: None)
