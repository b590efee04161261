"""`keras_adapterfusion.io.torch_bin.read_torch_bin`: PyTorch `.bin` state dicts without PyTorch.

Fixtures under `fixtures/torch_bin/` were written by real PyTorch
(`fixtures/make_torch_bin.py`); the malicious and malformed files are built here
byte by byte, so that nothing needs torch.
"""

import os
import pickle
import shlex
import struct
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import numpy as np
import pytest

from keras_adapterfusion.errors import CheckpointError
from keras_adapterfusion.io import torch_bin, torch_pickle
from keras_adapterfusion.io.torch_bin import read_torch_bin
from torch_files import (  # noqa: F401  (the opcode builders)
    FALSE,
    MAGIC,
    NONE,
    TRUE,
    op_call,
    op_dict,
    op_global,
    op_int,
    op_ordered_dict,
    op_storage,
    op_str,
    op_tensor,
    op_tuple,
    pickled,
    write_legacy,
    write_zip,
)

pytestmark = pytest.mark.backend_independent  # no backend changes what it tests: the TensorFlow pass runs it

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_BIN = os.path.join(HERE, "fixtures", "torch_bin")
VARIANT = os.path.join(HERE, "fixtures", "reference_variants", "single_no_original_ln_after")
STATE_FILES = ["state_zip.bin", "state_legacy.bin", "state_zip_big_endian.bin"]


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(TORCH_BIN, "reference.npz")) as npz:
        return {key: npz[key] for key in npz.files}


def assert_exactly(got, expected):
    assert list(got) == list(expected)
    for key, array in expected.items():
        assert got[key].dtype == array.dtype, key
        assert got[key].shape == array.shape, key
        assert got[key].tobytes() == np.ascontiguousarray(array).tobytes(), key  # bitwise, NaN included


# --------------------------------------------------------------------------- files written by PyTorch


@pytest.mark.parametrize("name", STATE_FILES)
def test_reads_torch_files_exactly(name, reference):
    got = read_torch_bin(os.path.join(TORCH_BIN, name))
    expected = {k: v for k, v in reference.items() if k != "weight"}
    assert_exactly(got, expected)
    for key, dtype in [("f32", np.float32), ("f16", np.float16), ("bf16", np.float32), ("f64", np.float64),
                       ("i64", np.int64), ("i32", np.int32), ("i16", np.int16), ("i8", np.int8),
                       ("u8", np.uint8), ("bool", np.bool_)]:
        assert got[key].dtype == dtype, key
    assert got["transposed"].shape == (4, 3) and got["column"].shape == (4,) and got["rows"].shape == (2, 6)
    assert got["scalar"].shape == () and got["empty"].shape == (0, 3) and got["empty_bf16"].shape == (2, 0)
    assert got["tied_a"] is not got["tied_b"]
    assert all(a.flags.c_contiguous and a.flags.owndata and a.dtype.isnative for a in got.values())


def test_fixture_files_are_what_they_claim():
    with open(os.path.join(TORCH_BIN, "state_legacy.bin"), "rb") as f:
        assert f.read(3) == b"\x80\x02\x8a"  # protocol 2, then the magic number as LONG1
    for name in ("state_zip.bin", "state_zip_big_endian.bin"):
        with zipfile.ZipFile(os.path.join(TORCH_BIN, name)) as z:
            prefix = z.namelist()[0].split("/")[0]
            assert z.read(f"{prefix}/byteorder") == (b"big" if "big" in name else b"little")
            assert b"_rebuild_tensor_v2" in z.read(f"{prefix}/data.pkl")
    for name in ("parameter_zip.bin", "parameter_legacy.bin"):
        with open(os.path.join(TORCH_BIN, name), "rb") as f:
            assert b"_rebuild_parameter" in f.read()


@pytest.mark.parametrize("name", ["parameter_zip.bin", "parameter_legacy.bin"])
def test_reads_parameters(name, reference):
    assert_exactly(read_torch_bin(os.path.join(TORCH_BIN, name)), {"weight": reference["weight"]})


@pytest.mark.parametrize("binary, safetensors", [
    ("solo/pytorch_adapter.bin", "solo/adapter.safetensors"),
    ("head/pytorch_model_head.bin", "head/model_head.safetensors"),
])
def test_adapterhub_bin_equals_its_safetensors_twin(binary, safetensors):
    from safetensors.numpy import load_file

    got = read_torch_bin(os.path.join(VARIANT, binary))
    expected = load_file(os.path.join(VARIANT, safetensors))
    assert sorted(got) == sorted(expected)
    assert_exactly({k: got[k] for k in expected}, expected)


def test_accepts_path_like_objects():
    import pathlib

    got = read_torch_bin(pathlib.Path(TORCH_BIN) / "parameter_zip.bin")
    assert set(got) == {"weight"}


def test_unpickler_is_a_restricted_pickle_unpickler():
    assert issubclass(torch_pickle._Unpickler, pickle.Unpickler)
    assert torch_pickle._Unpickler.find_class is not pickle.Unpickler.find_class


# --------------------------------------------------------------------------- files built by hand


F32 = np.array([1.5, -2.0, 3.25, 0.5], dtype="<f4")


def good_state(legacy):
    """A state dict of two views of one float32 storage of 4 elements: 'a' = [0:2], 'b' = [1::2]."""
    storage = op_storage("0", 4, legacy=legacy)
    return pickled(op_dict({"a": op_tensor(storage), "b": op_tensor(storage, offset=1, size=(2,), stride=(2,))}))


def write_state(tmp_path, fmt, main_pkl, payload=F32.tobytes(), count=4, name="x.bin"):
    if fmt == "zip":
        return write_zip(tmp_path / name, main_pkl, {"0": payload})
    return write_legacy(tmp_path / name, main_pkl, [("0", count, payload)])


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_hand_built_files_read(tmp_path, fmt):
    got = read_torch_bin(write_state(tmp_path, fmt, good_state(fmt == "legacy")))
    assert_exactly(got, {"a": F32[:2], "b": F32[1::2]})


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_older_rebuild_functions(tmp_path, fmt):
    # torch's weights-only allow-list has these too: _rebuild_tensor (no requires_grad/hooks) and
    # _rebuild_parameter_with_state (a Parameter with Python attributes, which are dropped).
    storage = op_storage("0", 4, legacy=fmt == "legacy")
    v1 = op_call(op_global("torch._utils", "_rebuild_tensor"), storage, op_int(2), op_tuple(op_int(2)),
                 op_tuple(op_int(1)))
    with_state = op_call(op_global("torch._utils", "_rebuild_parameter_with_state"), op_tensor(storage), TRUE,
                         op_ordered_dict(), op_dict({"tag": op_str("x")}))
    main = pickled(op_dict({"v1": v1, "param": with_state}))
    assert_exactly(read_torch_bin(write_state(tmp_path, fmt, main)), {"v1": F32[2:], "param": F32[:2]})


def test_legacy_cuda_storage_and_storage_view(tmp_path):
    # Files saved from a GPU name torch.cuda.FloatStorage; torch < 0.4 stored storage views.
    view = op_tuple(op_str("view"), op_int(1), op_int(3))
    storage = op_storage("0", 4, legacy=True, module="torch.cuda", view=view)
    main = pickled(op_dict({"v": op_tensor(storage, offset=1, size=(2,))}))
    path = write_legacy(tmp_path / "cuda.bin", main, [("0", 4, F32.tobytes())])
    assert_exactly(read_torch_bin(path), {"v": F32[2:4]})


# --------------------------------------------------------------------------- malicious pickles


def payloads(marker):
    command = f"touch {shlex.quote(str(marker))}"
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": pickled(op_call(op_global("os", "system"), op_str(command))),
        "posix.system": pickled(op_call(op_global("posix", "system"), op_str(command))),
        "builtins.exec": pickled(op_call(op_global("builtins", "exec"), op_str(code))),
        "subprocess.Popen": pickled(op_call(op_global("subprocess", "Popen"),
                                            b"(" + op_str("touch") + op_str(str(marker)) + b"l")),
        "builtins.getattr": pickled(op_call(op_call(op_global("builtins", "getattr"),
                                                    op_call(op_global("builtins", "__import__"), op_str("os")),
                                                    op_str("system")), op_str(command))),
        # Protocol 4's STACK_GLOBAL takes its names from the stack: only find_class sees them.
        "os.system (STACK_GLOBAL)": b"\x80\x04\x8c\x02os\x8c\x06system\x93" + op_tuple(op_str(command)) + b"R.",
    }


PAYLOADS = list(payloads("m"))


@pytest.mark.parametrize("name", PAYLOADS)
def test_payloads_are_live_under_plain_pickle(tmp_path, name):
    # Control: plain pickle does run each payload below (it creates the marker).
    marker = tmp_path / "marker"
    process = pickle.loads(payloads(marker)[name])
    if name == "subprocess.Popen":
        process.wait(timeout=10)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("name", PAYLOADS)
def test_malicious_pickle_is_refused_and_not_run(tmp_path, fmt, name):
    marker = tmp_path / "marker"
    payload = payloads(marker)[name]
    path = write_zip(tmp_path / "evil.bin", payload) if fmt == "zip" else write_legacy(tmp_path / "evil.bin", payload)
    with pytest.raises(CheckpointError) as info:
        read_torch_bin(path)
    message = str(info.value)
    refused = name.split(" ")[0]
    assert message.startswith(f"{path}: refused to load: the pickle asks for '{refused}'"), message
    assert "torch.load(weights_only=True)" in message
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_malicious_global_after_a_real_tensor_is_refused(tmp_path, fmt):
    marker = tmp_path / "marker"
    storage = op_storage("0", 4, legacy=fmt == "legacy")
    main = pickled(op_dict({"a": op_tensor(storage),
                            "b": op_call(op_global("os", "system"), op_str(f"touch {marker}"))}))
    with pytest.raises(CheckpointError, match="'os.system'"):
        read_torch_bin(write_state(tmp_path, fmt, main))
    assert not marker.exists()


def test_malicious_magic_number_pickle_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.bin"
    path.write_bytes(payloads(marker)["os.system"] + b"rest")
    with pytest.raises(CheckpointError, match=r"refused to load: the pickle asks for 'os\.system'"):
        read_torch_bin(path)
    assert not marker.exists()


def test_stack_global_with_allowed_name_on_plain_data_pickle_is_refused(tmp_path):
    # The legacy format's plain-data pickles (magic number, keys) may name no global at all.
    magic = b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R."
    path = tmp_path / "x.bin"
    path.write_bytes(magic)
    with pytest.raises(CheckpointError, match="'collections.OrderedDict'"):
        read_torch_bin(path)


# Allowed names called wrongly. Each entry: (pickle body for key "t", text the message must hold).
def wrong_calls(legacy):
    s = op_storage("0", 4, legacy=legacy)
    rebuild = op_global("torch._utils", "_rebuild_tensor_v2")
    ints = op_tuple(op_int(2))
    return {
        "too few arguments": (op_call(rebuild, s, op_int(0)), "_rebuild_tensor_v2 is called with 2 arguments"),
        "storage is a string": (op_call(rebuild, op_str("0"), op_int(0), ints, op_tuple(op_int(1)), FALSE,
                                        op_ordered_dict()), "as its storage"),
        "requires_grad not bool": (op_call(rebuild, s, op_int(0), ints, op_tuple(op_int(1)), op_str("yes"),
                                           op_ordered_dict()), "requires_grad"),
        "hooks not empty": (op_call(rebuild, s, op_int(0), ints, op_tuple(op_int(1)), FALSE,
                                    op_dict({"h": op_int(1)})), "backward hooks"),
        "conj bit": (op_tensor(s, extra=(op_dict({"conj": TRUE}),)), "conjugate bit"),
        "OrderedDict with junk": (op_call(op_global("collections", "OrderedDict"), op_str("x"), op_str("y")),
                                  "collections.OrderedDict is called with"),
        "storage class called": (op_call(op_global("torch", "FloatStorage"), op_int(3)), "calls torch.FloatStorage"),
        "parameter of a string": (op_call(op_global("torch._utils", "_rebuild_parameter"), op_str("x"), TRUE,
                                          op_ordered_dict()), "_rebuild_parameter is given"),
        "BUILD on a tensor": (op_tensor(s) + op_dict({"x": op_int(1)}) + b"b", "sets state on a tensor"),
        "BUILD on a function": (rebuild + op_dict({"x": op_int(1)}) + b"b",
                                "sets state on torch._utils._rebuild_tensor_v2"),
        "BUILD with slot state on a function": (rebuild + op_tuple(NONE, op_dict({"__defaults__": b")"})) + b"b",
                                                "sets state on torch._utils._rebuild_tensor_v2"),
    }


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("case", list(wrong_calls(False)))
def test_allowed_names_with_wrong_arguments_are_refused(tmp_path, fmt, case):
    body, expected = wrong_calls(fmt == "legacy")[case]
    path = write_state(tmp_path, fmt, pickled(op_dict({"t": body})))
    with pytest.raises(CheckpointError) as info:
        read_torch_bin(path)
    assert str(info.value).startswith(f"{path}: "), str(info.value)
    assert expected in str(info.value)


def bad_persistent_ids(legacy):
    tail = [NONE] if legacy else []
    st = op_global("torch", "FloatStorage")
    return {
        "int id": op_int(0) + b"Q",
        "string id": op_str("0") + b"Q",
        "module id": op_tuple(op_str("module"), st, op_str("0"), op_str("cpu"), op_int(4), *tail) + b"Q",
        "too short": op_tuple(op_str("storage"), st, op_str("0"), op_str("cpu")) + b"Q",
        "other format's form": op_tuple(op_str("storage"), st, op_str("0"), op_str("cpu"), op_int(4),
                                        *([] if legacy else [NONE])) + b"Q",
        "class is a string": op_tuple(op_str("storage"), op_str("FloatStorage"), op_str("0"), op_str("cpu"),
                                      op_int(4), *tail) + b"Q",
        "negative numel": op_tuple(op_str("storage"), st, op_str("0"), op_str("cpu"), op_int(-4), *tail) + b"Q",
        "key with a slash": op_tuple(op_str("storage"), st, op_str("../0"), op_str("cpu"), op_int(4), *tail) + b"Q",
    }


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("case", list(bad_persistent_ids(False)))
def test_persistent_ids_of_the_wrong_form_are_refused(tmp_path, fmt, case):
    storage = bad_persistent_ids(fmt == "legacy")[case]
    path = write_state(tmp_path, fmt, pickled(op_dict({"t": op_tensor(storage)})))
    with pytest.raises(CheckpointError) as info:
        read_torch_bin(path)
    assert str(info.value).startswith(f"{path}: ") and "refused to load" in str(info.value), str(info.value)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_storage_declared_twice_differently_is_refused(tmp_path, fmt):
    legacy = fmt == "legacy"
    main = pickled(op_dict({"a": op_tensor(op_storage("0", 4, legacy=legacy)),
                            "b": op_tensor(op_storage("0", 2, "DoubleStorage", legacy=legacy))}))
    with pytest.raises(CheckpointError, match="declared as torch.FloatStorage of 4 elements and again"):
        read_torch_bin(write_state(tmp_path, fmt, main))


@pytest.mark.parametrize("opcode, body", [
    ("INST", b"(ios\nsystem\n" + op_str("true") + b"."),
    ("OBJ", b"(" + op_global("collections", "OrderedDict") + b"o."),
    ("NEWOBJ", op_global("collections", "OrderedDict") + b")\x81."),
    ("EXT1", b"\x82\x01."),
    ("PERSID", b"P0\n."),
])
def test_opcodes_a_state_dict_never_needs_are_refused(tmp_path, opcode, body):
    path = write_zip(tmp_path / "x.bin", b"\x80\x02" + body)
    with pytest.raises(CheckpointError, match=rf"uses the pickle opcode {opcode} at byte"):
        read_torch_bin(path)


# --------------------------------------------------------------------------- malformed files


def expect_error(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        read_torch_bin(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file_and_directory(tmp_path):
    expect_error(str(tmp_path / "nope.bin"), "cannot be opened")
    expect_error(str(tmp_path), "cannot be opened")


def test_empty_and_foreign_files(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    expect_error(str(tmp_path / "empty.bin"), "is empty")
    (tmp_path / "text.bin").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:...\n")
    expect_error(str(tmp_path / "text.bin"), "neither a zip archive nor a pickle")
    (tmp_path / "member").write_bytes(b"x")
    with tarfile.open(tmp_path / "old.bin", "w") as tar:
        tar.add(tmp_path / "member", arcname="storages")
    expect_error(str(tmp_path / "old.bin"), "tar archive")


@pytest.mark.parametrize("name", ["state_zip.bin", "state_legacy.bin"])
def test_every_truncation_is_an_error_naming_the_file(tmp_path, name):
    with open(os.path.join(TORCH_BIN, name), "rb") as f:
        data = f.read()
    path = str(tmp_path / name)
    for cut in list(range(1, 80, 3)) + list(range(80, len(data), 61)) + [len(data) - 9, len(data) - 1]:
        with open(path, "wb") as f:
            f.write(data[:cut])
        expect_error(path)


def test_random_corruption_never_escapes_as_another_error(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("state_legacy.bin", "state_zip.bin"):
        with open(os.path.join(TORCH_BIN, name), "rb") as f:
            data = bytearray(f.read())
        path = str(tmp_path / name)
        for _ in range(60):
            corrupt = bytearray(data)
            for at in rng.integers(0, len(data), size=3):
                corrupt[at] = int(rng.integers(0, 256))
            with open(path, "wb") as f:
                f.write(bytes(corrupt))
            try:
                read_torch_bin(path)
            except CheckpointError as e:
                assert str(e).startswith(f"{path}: ")


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "x.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data/0", F32.tobytes())
        z.writestr("archive/version", b"3\n")
    expect_error(str(path), "no record 'archive/data.pkl'")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.pkl", good_state(False))
    expect_error(str(path), "not in one top folder")


def test_zip_prefix_is_any_top_folder(tmp_path):
    path = write_zip(tmp_path / "x.bin", good_state(False), {"0": F32.tobytes()}, prefix="pytorch_model")
    assert_exactly(read_torch_bin(path), {"a": F32[:2], "b": F32[1::2]})


def test_zip_missing_or_wrong_sized_storage_record(tmp_path):
    path = write_zip(tmp_path / "x.bin", good_state(False), {})
    expect_error(path, "tensor 'a'", "no record 'archive/data/0'")
    path = write_zip(tmp_path / "x.bin", good_state(False), {"0": F32.tobytes()[:12]})
    expect_error(path, "tensor 'a'", "FloatStorage of 4 elements (16 bytes)", "holds 12 bytes")


def test_zip_bad_byteorder_record(tmp_path):
    path = write_zip(tmp_path / "x.bin", good_state(False), {"0": F32.tobytes()}, byteorder=b"middle")
    expect_error(path, "byteorder")


def test_zip_without_byteorder_record_is_little_endian(tmp_path):
    path = write_zip(tmp_path / "x.bin", good_state(False), {"0": F32.tobytes()}, byteorder=None)
    assert_exactly(read_torch_bin(path), {"a": F32[:2], "b": F32[1::2]})


def test_zip_big_endian_storage(tmp_path):
    path = write_zip(tmp_path / "x.bin", good_state(False), {"0": F32.astype(">f4").tobytes()}, byteorder=b"big")
    assert_exactly(read_torch_bin(path), {"a": F32[:2], "b": F32[1::2]})


def test_legacy_bad_magic_number_and_version(tmp_path):
    path = write_legacy(tmp_path / "x.bin", good_state(True), [("0", 4, F32.tobytes())], magic=12345)
    expect_error(path, "bad magic number 12345")
    path = write_legacy(tmp_path / "x.bin", good_state(True), [("0", 4, F32.tobytes())], version=1000)
    expect_error(path, "protocol version 1000")
    (tmp_path / "y.bin").write_bytes(pickle.dumps({"a": [1, 2]}, protocol=2))
    expect_error(str(tmp_path / "y.bin"), "bad magic number")


def test_legacy_storage_count_and_keys(tmp_path):
    path = write_legacy(tmp_path / "x.bin", good_state(True), [("0", 3, F32.tobytes()[:12])])
    expect_error(path, "storage '0' (tensor 'a', 'b') holds 3 elements, but the pickle declares a FloatStorage of 4")
    path = write_legacy(tmp_path / "x.bin", good_state(True), [("0", 4, F32.tobytes())], keys=[])
    expect_error(path, "storage '0' (tensor 'a', 'b') is not in the file's list of storages")
    path = write_legacy(tmp_path / "x.bin", good_state(True), [("0", 4, F32.tobytes()), ("9", 0, b"")])
    expect_error(path, "storage '9', which no tensor uses")
    path = write_legacy(tmp_path / "x.bin", good_state(True), [("0", 4, F32.tobytes()[:10])])
    expect_error(path, "ends inside the data of storage '0'")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_garbage_pickle(tmp_path, fmt):
    garbage = b"\x80\x02" + bytes(range(250, 256)) * 4
    path = write_zip(tmp_path / "x.bin", garbage) if fmt == "zip" else write_legacy(tmp_path / "x.bin", garbage)
    expect_error(path, "not a valid pickle")
    # Opcodes that parse but make no sense (SETITEMS on nothing, STOP on an empty stack).
    nonsense = b"\x80\x02u."
    path = write_zip(tmp_path / "x.bin", nonsense) if fmt == "zip" else write_legacy(tmp_path / "x.bin", nonsense)
    expect_error(path, "not a valid pickle")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("tensor_kwargs, fragment", [
    (dict(offset=3, size=(2,)), "reaches element 4 of its FloatStorage '0', which has 4 elements"),
    (dict(size=(5,)), "reaches element 4"),
    (dict(size=(2, 3), stride=(3, 1)), "reaches element 5"),
    (dict(size=(2,), stride=(-1,)), "has the stride (-1,)"),
    (dict(size=(2, 2), stride=(1,)), "has the stride (1,)"),
    (dict(offset=-1), "storage offset -1"),
    (dict(offset=9, size=(0,)), "starts at element 9 of a storage of 4 elements"),
])
def test_views_outside_the_storage_name_the_tensor(tmp_path, fmt, tensor_kwargs, fragment):
    storage = op_storage("0", 4, legacy=fmt == "legacy")
    main = pickled(op_dict({"ok": op_tensor(storage), "bad.weight": op_tensor(storage, **tensor_kwargs)}))
    expect_error(write_state(tmp_path, fmt, main), "tensor 'bad.weight'", fragment)


def test_repeated_elements_beyond_the_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_bin, "_MAX_REPEATED_BYTES", 1000)
    storage = op_storage("0", 4)
    main = pickled(op_dict({"expanded": op_tensor(storage, size=(100, 4), stride=(0, 1))}))
    path = write_zip(tmp_path / "x.bin", main, {"0": F32.tobytes()})
    expect_error(path, "tensor 'expanded'", "repeats the 4 elements")
    monkeypatch.setattr(torch_bin, "_MAX_REPEATED_BYTES", 1 << 30)
    assert_exactly(read_torch_bin(path), {"expanded": np.tile(F32, (100, 1))})


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("body, fragment", [
    (b"]" + op_str("x") + b"a", "the pickle holds a list of 1 items, not a state dict"),
    (op_int(7), "the pickle holds 7, not a state dict"),
    (op_dict({"model": op_dict({"w": op_int(1)})}), "entry 'model' holds a dict of 1 entries, not a tensor"),
    (op_dict({"step": op_int(3)}), "entry 'step' holds 3, not a tensor"),
    (b"}" + op_int(1) + op_str("x") + b"s", "the state dict has the key 1"),
])
def test_not_a_flat_state_dict(tmp_path, fmt, body, fragment):
    path = write_zip(tmp_path / "x.bin", pickled(body)) if fmt == "zip" else \
        write_legacy(tmp_path / "x.bin", pickled(body))
    expect_error(path, fragment)


# --------------------------------------------------------------------------- no torch


def test_reading_does_not_import_torch():
    # A fresh interpreter that records (and fails) any attempt to import torch. The
    # package's `__init__` modules are skipped (they import keras, which takes
    # seconds): what is checked is this module and everything it imports.
    code = textwrap.dedent("""
        import os, sys, types
        root = sys.argv[1]
        for name, sub in (("keras_adapterfusion", ""), ("keras_adapterfusion.io", "io")):
            package = types.ModuleType(name)
            package.__path__ = [os.path.join(root, "keras_adapterfusion", sub)]
            sys.modules[name] = package
        attempts = []

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    attempts.append(name)
                    raise ImportError("torch is blocked in this test")

        sys.meta_path.insert(0, NoTorch())
        from keras_adapterfusion.io.torch_bin import read_torch_bin
        for path in sys.argv[2:]:
            assert read_torch_bin(path)
        assert not attempts, attempts
        assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
        print("ok", len(sys.argv) - 2)
    """)
    files = [os.path.join(TORCH_BIN, name) for name in STATE_FILES + ["parameter_zip.bin", "parameter_legacy.bin"]]
    files.append(os.path.join(VARIANT, "solo", "pytorch_adapter.bin"))
    result = subprocess.run([sys.executable, "-c", code, os.path.dirname(HERE), *files], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(files)}"
