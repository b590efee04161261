"""Model inputs are checked where users hand them in; an invalid input never gives a number.

An embedding lookup with an id outside its table reads the wrong row, raises a
raw backend error, or gives NaN, depending on the backend; a float id is
truncated; an attention mask of another shape is broadcast. So every input is
checked before it reaches a compiled step, and the error names the input, the
offending value, where it is, and the allowed range:

| input | rule |
|---|---|
| `input_ids` | integers in `[0, vocab_size)`; `[batch, tokens]` (`[batch, choices, tokens]` for multiple choice) |
| `token_type_ids` | integers in `[0, type_vocab_size)` (0 or 1, ignored, without a token-type table), the shape of `input_ids` |
| `attention_mask` | 0 or 1 (or booleans), the shape of `input_ids` |
| sequence length | within the position table (`max_positions`; RoBERTa-style encoders count from `pad_token_id + 1`) |
| `task_id` (MT-A) | integers in `[0, number of tasks)`, one per example |

Where the checks run:

- eager calls (`model(x)`, `encoder(x)`): on the concrete values (`check_inputs`);
- `fit`, `evaluate`, `predict` and the `*_on_batch` methods of this package's
  models: arrays are checked once, up front; `tf.data` datasets get the same
  checks as graph assertions in a `map`; `PyDataset`s and generators are
  checked batch by batch (`checked_data`). Inside the compiled step nothing is
  checked (a JAX or XLA graph cannot raise), so these checks come first;
- exported SavedModels: every serving signature runs `tf_assertions` first, so
  TF Serving answers `INVALID_ARGUMENT` with the same message.

Every failure is an `InputError` (a `ValueError`).
"""

import dataclasses
import re

import keras
import numpy as np

from keras_adapterfusion.errors import InputError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Graph assertions carry the message between these markers, so that the error
# TensorFlow raises can be turned back into an InputError with just the message.
_OPEN, _CLOSE = "kaf-input-check|", "|kaf-end"
_MARKED = re.compile(re.escape(_OPEN) + r"(.*?)" + re.escape(_CLOSE), re.S)


@dataclasses.dataclass(frozen=True)
class InputLimits:
    """What an encoder accepts.

    Args:
        vocab_size: rows of the word table.
        type_vocab_size: the token types accepted: rows of the token-type table,
            or 2 (the segment ids 0 and 1 a tokenizer gives a pair; ignored) for an
            encoder without one (DistilBERT, DeBERTa-v3), as `transformers` ignores them.
        max_tokens: the longest sequence the position table holds (for
            RoBERTa-style positions: the most non-padding tokens).
        position_style: `"absolute"` or `"roberta"`.
        pad_token_id: the padding id (RoBERTa positions skip it).
        choices: inputs are `[batch, choices, tokens]` (a multiple-choice head).
        num_tasks: for MT-A, the number of tasks `task_id` indexes.
    """

    vocab_size: int
    type_vocab_size: int
    max_tokens: int
    position_style: str = "absolute"
    pad_token_id: int = 0
    choices: bool = False
    num_tasks: int = 0

    @classmethod
    def of(cls, encoder, choices=False, num_tasks=0):
        """The limits `encoder` sets (vocabulary, token types, positions).

        Args:
            encoder: a `TransformerEncoder`.
            choices: inputs are `[batch, choices, tokens]` (a multiple-choice head).
            num_tasks: tasks of an MT-A model (checks `task_id`); 0 for none.
        """
        roberta = encoder.position_style == "roberta"
        max_tokens = encoder.max_positions - (encoder.pad_token_id + 1 if roberta else 0)
        return cls(encoder.vocab_size, encoder.type_vocab_size or 2, max_tokens, encoder.position_style,
                   encoder.pad_token_id, choices, num_tasks)


def limits_of(model):
    """The `InputLimits` of one of this package's models (or of an encoder)."""
    encoder = getattr(model, "encoder", model)
    head = getattr(model, "head", None)
    setup = getattr(model, "adapter_setup", None)
    per_row = getattr(setup, "kind", None) == "per_row"  # MT-A routes each example by its task_id
    return InputLimits.of(encoder, choices=bool(getattr(head, "flattens_choices", False)),
                          num_tasks=len(setup.adapters) if per_row else 0)


def _where(index, prefix=""):
    return prefix + "[" + ", ".join(str(int(i)) for i in index) + "]"


def _first(mask):
    return tuple(np.argwhere(mask)[0])


def check_arrays(inputs, limits, where=""):
    """Check a dict of numpy-convertible inputs against `limits`; raise `InputError` naming the first fault.

    `where` prefixes the position in messages (e.g. `"batch 3, "`).
    """
    if not isinstance(inputs, dict) or "input_ids" not in inputs:
        got = f"a dict with keys {sorted(inputs)}" if isinstance(inputs, dict) else type(inputs).__name__
        raise InputError(f"model inputs: got {got}; expected a dict with 'input_ids' (and optionally "
                         "'attention_mask', 'token_type_ids').")
    arrays = {k: np.asarray(inputs[k]) for k in INPUT_NAMES if inputs.get(k) is not None}
    ids = arrays["input_ids"]
    rank = 3 if limits.choices else 2
    layout = "[batch, choices, tokens]" if limits.choices else "[batch, tokens]"
    for name, value in arrays.items():
        if value.ndim != rank:
            raise InputError(f"{name}: got shape {list(value.shape)}; expected rank {rank}, {layout}.")
        if name == "attention_mask" and value.dtype == bool:
            continue
        if not np.issubdtype(value.dtype, np.integer):
            raise InputError(f"{name}: got {value.dtype} values; expected integers ({name} are never fractional, "
                             "and a float would be truncated).")
    for name in ("attention_mask", "token_type_ids"):
        if name in arrays and arrays[name].shape != ids.shape:
            raise InputError(f"{name}: got shape {list(arrays[name].shape)}; expected the shape of input_ids, "
                             f"{list(ids.shape)}.")
    if ids.size:
        for name, high in (("input_ids", limits.vocab_size), ("token_type_ids", limits.type_vocab_size)):
            if name not in arrays:
                continue
            value = arrays[name]
            bad = (value < 0) | (value >= high)
            if bad.any():
                at = _first(bad)
                table = "vocabulary" if name == "input_ids" else "token-type table"
                raise InputError(f"{name}: got {int(value[at])} at {_where(at, where)}; expected integers in "
                                 f"[0, {high}) (the encoder {table}).")
        mask = arrays.get("attention_mask")
        if mask is not None and mask.dtype != bool:
            bad = (mask != 0) & (mask != 1)
            if bad.any():
                at = _first(bad)
                raise InputError(f"attention_mask: got {int(mask[at])} at {_where(at, where)}; expected 0 "
                                 "(padding) or 1 (token).")
        _check_length(ids, limits, where)
    return arrays


def _check_length(ids, limits, where):
    if limits.position_style == "roberta":
        counts = np.sum(ids != limits.pad_token_id, axis=-1)
        longest = int(counts.max())
        if longest > limits.max_tokens:
            at = np.unravel_index(int(np.argmax(counts)), counts.shape)
            raise InputError(f"input_ids: example {_where(at, where)} has {longest} non-padding tokens; the "
                             f"encoder position table holds {limits.max_tokens} (tokenize with "
                             f"max_length <= {limits.max_tokens}).")
    elif ids.shape[-1] > limits.max_tokens:
        raise InputError(f"input_ids: got sequences of {ids.shape[-1]} tokens; the encoder position table holds "
                         f"{limits.max_tokens} (tokenize with max_length <= {limits.max_tokens}).")


def check_task_ids(task_id, num_tasks, batch, where=""):
    """MT-A: `task_id` holds one integer in `[0, num_tasks)` per example."""
    value = np.asarray(task_id)
    if not np.issubdtype(value.dtype, np.integer):
        raise InputError(f"task_id: got {value.dtype} values; expected integers in [0, {num_tasks}).")
    value = value.reshape(-1)
    if value.shape[0] != batch:
        raise InputError(f"task_id: got {value.shape[0]} values for a batch of {batch}; expected one per example.")
    bad = (value < 0) | (value >= num_tasks)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"task_id: got {int(value[i])} at {_where((i,), where)}; expected integers in "
                         f"[0, {num_tasks}) (the tasks of the model).")


def _concrete(value):
    """A numpy array of `value`, or None when it is symbolic (traced, or a Keras tensor)."""
    if value is None or keras.backend.is_keras_tensor(value):
        return None
    if isinstance(value, (np.ndarray, np.generic, list, tuple, int)):
        return np.asarray(value)
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # a traced value (tf.function, jax.jit): the boundary checks covered it
        return None


def check_model_call(inputs, model):
    """Check the concrete inputs of an eager call of one of this package's models."""
    if not isinstance(inputs, dict) or "input_ids" not in inputs:
        return
    concrete = {k: _concrete(inputs.get(k)) for k in INPUT_NAMES + ("task_id",) if inputs.get(k) is not None}
    if any(v is None for v in concrete.values()):
        return
    _check_batch(concrete, limits_of(model), "")


def check_inputs(inputs, encoder, adapter_index=None, num_adapters=None):
    """Check concrete inputs of an eager call against `encoder`; symbolic inputs pass through."""
    if not isinstance(inputs, dict) or "input_ids" not in inputs:
        return  # the encoder's call names the problem
    concrete = {k: _concrete(inputs.get(k)) for k in INPUT_NAMES if inputs.get(k) is not None}
    if any(v is None for v in concrete.values()):
        return
    check_arrays(concrete, InputLimits.of(encoder))
    if adapter_index is not None and num_adapters:
        index = _concrete(adapter_index)
        if index is not None:
            check_task_ids(index, num_adapters, concrete["input_ids"].shape[0])


# ------------------------------------------------------------ graph checks
def _check_static(tf, inputs, limits):
    """Dtypes and ranks of tensors or `tf.TensorSpec`s, known before anything runs."""
    if "input_ids" not in inputs:
        raise InputError(f"model inputs: got keys {sorted(inputs)}; expected 'input_ids'.")
    rank = 3 if limits.choices else 2
    for name in INPUT_NAMES + ("task_id",):
        if inputs.get(name) is None:
            continue
        value = inputs[name]
        if name != "task_id" and value.shape.rank is not None and value.shape.rank != rank:
            raise InputError(f"{name}: got shape {value.shape.as_list()}; expected rank {rank}.")
        if not (value.dtype.is_integer or (name == "attention_mask" and value.dtype == tf.bool)):
            raise InputError(f"{name}: got {value.dtype.name} values; expected integers.")


def tf_assertions(tf, inputs, limits):
    """TensorFlow assertion ops for `inputs` (a dict of tensors) in graph code: tf.data and SavedModels.

    Static facts (dtypes, ranks, known shapes) are checked at once in Python;
    the values are checked by `tf.debugging.Assert` ops whose message carries
    the offending value. Returns the list of ops to depend on.
    """
    _check_static(tf, inputs, limits)
    ids = tf.cast(inputs["input_ids"], tf.int64)

    def marked(*parts):
        return tf.strings.format(_OPEN + "".join(p if isinstance(p, str) else "{}" for p in parts) + _CLOSE,
                                 tuple(p for p in parts if not isinstance(p, str)), summarize=8)

    ops = []

    def flat(value):  # with a 0 appended, so min and max of an empty batch are defined
        return tf.concat([tf.reshape(value, [-1]), tf.constant([0], tf.int64)], 0)

    def bounds(name, value, high, table):
        expected = f"; expected integers in [0, {high}) ({table})."
        ops.append(tf.debugging.Assert(tf.reduce_all(value >= 0),
                                       [marked(f"{name}: got ", tf.reduce_min(flat(value)), expected)]))
        ops.append(tf.debugging.Assert(tf.reduce_all(value < high),
                                       [marked(f"{name}: got ", tf.reduce_max(flat(value)), expected)]))

    bounds("input_ids", ids, limits.vocab_size, "the encoder vocabulary")
    for name in ("attention_mask", "token_type_ids"):
        if inputs.get(name) is None:
            continue
        value = inputs[name]
        same = tf.reduce_all(tf.equal(tf.shape(value, out_type=tf.int64), tf.shape(ids, out_type=tf.int64)))
        ops.append(tf.debugging.Assert(same, [marked(f"{name}: got shape ", tf.shape(value),
                                                     "; expected the shape of input_ids, ", tf.shape(ids), ".")]))
        if name == "token_type_ids":
            bounds(name, tf.cast(value, tf.int64), limits.type_vocab_size, "the encoder token-type table")
        elif value.dtype != tf.bool:
            value = tf.cast(value, tf.int64)
            is_binary = tf.logical_or(tf.equal(value, 0), tf.equal(value, 1))
            binary = tf.reduce_all(is_binary)
            odd = tf.reduce_max(flat(tf.where(is_binary, tf.zeros_like(value), value)))
            ops.append(tf.debugging.Assert(binary, [marked("attention_mask: got ", odd,
                                                           "; expected 0 (padding) or 1 (token).")]))
    if limits.position_style == "roberta":
        longest = tf.reduce_max(flat(tf.reduce_sum(tf.cast(tf.not_equal(ids, limits.pad_token_id), tf.int64), -1)))
        what = " non-padding tokens"
    else:
        longest = tf.shape(ids, out_type=tf.int64)[-1]
        what = " tokens"
    ops.append(tf.debugging.Assert(longest <= limits.max_tokens, [marked(
        "input_ids: got sequences of ", longest, f"{what}; the encoder position table holds {limits.max_tokens} "
        f"(tokenize with max_length <= {limits.max_tokens}).")]))
    if limits.num_tasks and inputs.get("task_id") is not None:
        task = tf.cast(inputs["task_id"], tf.int64)
        bounds("task_id", task, limits.num_tasks, "the tasks of the model")
    return ops


def input_error_from(error):
    """The `InputError` a TensorFlow error from `tf_assertions` carries, or None."""
    match = _MARKED.search(str(getattr(error, "message", error)))
    return None if match is None else InputError(match.group(1))


# ------------------------------------------------------ data at the boundary
def _check_batch(x, limits, where):
    if isinstance(x, dict):
        arrays = check_arrays(x, limits, where)
        if limits.num_tasks:
            if x.get("task_id") is None:
                raise InputError(f"task_id: missing from the inputs{' (' + where.rstrip(', ') + ')' if where else ''}; "
                                 f"expected one task index in [0, {limits.num_tasks}) per example.")
            check_task_ids(x["task_id"], limits.num_tasks, arrays["input_ids"].shape[0], where)
    return x


def _split(element):
    if isinstance(element, tuple):
        return element[0], element[1:]
    return element, None


def _join(x, rest):
    return x if rest is None else (x,) + tuple(rest)


def _is_tf_dataset(data):
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "map") and hasattr(data, "element_spec")


def checked_data(data, limits):
    """`data` for `fit`/`evaluate`/`predict`, with every batch's inputs checked (see the module docstring)."""
    if data is None:
        return None
    if isinstance(data, dict):
        _check_batch(data, limits, "")
        return data
    if _is_tf_dataset(data):
        import tensorflow as tf

        spec, _ = _split(data.element_spec)
        if isinstance(spec, dict):  # dtypes and ranks are known now: refuse before any step
            _check_static(tf, spec, limits)

        def check(*element):
            x, rest = _split(element if len(element) > 1 else element[0])
            if isinstance(x, dict):
                with tf.control_dependencies(tf_assertions(tf, x, limits)):
                    x = {k: tf.identity(v) for k, v in x.items()}
            return _join(x, rest)

        return data.map(check)
    if isinstance(data, keras.utils.PyDataset):
        return _CheckedPyDataset(data, limits)
    if hasattr(data, "__next__") or (hasattr(data, "__iter__") and not isinstance(data, (list, tuple, np.ndarray))):
        return _checked_generator(data, limits)
    return data


def _checked_generator(data, limits):
    for i, element in enumerate(data):
        x, _ = _split(element)
        _check_batch(x, limits, f"batch {i}, ")
        yield element


class _CheckedPyDataset(keras.utils.PyDataset):
    """A `PyDataset` whose batches are checked as they are read."""

    def __init__(self, dataset, limits):
        super().__init__(workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
                         max_queue_size=dataset.max_queue_size)
        self.dataset, self.limits = dataset, limits

    def __len__(self):
        return len(self.dataset)

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __getitem__(self, index):
        element = self.dataset[index]
        _check_batch(_split(element)[0], self.limits, f"batch {index}, ")
        return element

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


def checked_validation(validation_data, limits):
    """`validation_data` of `fit` (a tuple of arrays, or a dataset), checked like `checked_data`."""
    if isinstance(validation_data, tuple):
        x, rest = _split(validation_data)
        return _join(checked_data(x, limits), rest)
    return checked_data(validation_data, limits)


def reraise_graph_errors(function, *args, **kwargs):
    """Call `function`; a TensorFlow error carrying a `tf_assertions` message becomes that `InputError`."""
    try:
        return function(*args, **kwargs)
    except InputError:
        raise
    except Exception as e:  # tf.errors.InvalidArgumentError, raised while iterating a checked tf.data dataset
        error = input_error_from(e)
        if error is None:
            raise
        raise error from None
