"""Fusion attentions over a dataset, and the paper's heatmap (blocks × adapters).

Example:

```python
from keras_adapterfusion import analysis
from keras_adapterfusion.training.callbacks import FusionAttentionCallback

mean = analysis.collect_fusion_attentions(fusion_model, validation_data)   # [blocks, adapters]
analysis.plot_fusion_heatmap(mean, fusion_model.adapter_setup.adapters, "fusion_heatmap.png")
fusion_model.fit(train, callbacks=[FusionAttentionCallback(validation_data, "attn/")])  # training.callbacks
```
"""

import os

import keras
import numpy as np

from keras_adapterfusion.io.files import write_json


def fusion_setup(model):
    """The fusion set-up `model` runs (`ValueError` when it runs none)."""
    setup = getattr(model, "adapter_setup", None)
    if setup is None or setup.kind != "fuse":
        raise ValueError(
            f"fusion attentions: model {getattr(model, 'name', model)!r} runs adapter setup {str(setup)!r}; "
            "expected a fusion."
        )
    return setup


def _batches(data, batch_size):
    """Batches of `data`: Keras-style arrays (`x` or `(x, y[, w])`, `x` a dict of arrays) are cut into
    batches; anything else (a `tf.data.Dataset`, a `PyDataset`, a list of batches) is iterated as it is."""
    if isinstance(data, tuple) and data and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict):
        arrays = {k: np.asarray(v) for k, v in data.items()}
        n = len(arrays["input_ids"])
        return [{k: v[i:i + batch_size] for k, v in arrays.items()} for i in range(0, n, batch_size)]
    if isinstance(data, keras.utils.PyDataset):
        return (data[i] for i in range(len(data)))
    return data


def collect_fusion_attentions(model, dataset, steps=None, slot="output", verbose=1, batch_size=64):
    """Mean fusion attention per block and adapter over the real tokens of `dataset`.

    Args:
        model: an `AdapterModel` whose `adapter_setup` is a fusion.
        dataset: the inputs as Keras takes them: a dict of arrays `x`, a tuple
            `(x, y[, w])` of arrays (cut into batches of `batch_size`), or batches
            of `x` or `(x, y[, w])` (a `tf.data.Dataset`, a `PyDataset`, a list);
            `x` holds `input_ids` and `attention_mask`.
        steps: stop after this many batches.
        slot: `"output"` or `"mh"` (the slot after attention).
        verbose: show a progress bar.
        batch_size: batch size for arrays.

    Returns:
        A numpy array `[blocks, adapters]`; each row sums to 1.
    """
    setup = fusion_setup(model)
    key = "fusion_attentions" if slot == "output" else "mh_fusion_attentions"
    total, count = None, 0.0
    progbar = keras.utils.Progbar(steps, unit_name="batch") if verbose else None
    for i, batch in enumerate(_batches(dataset, batch_size)):
        if steps is not None and i >= steps:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = {k: v for k, v in x.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out = model.encoder(x, adapter_setup=setup, training=False)
        if key not in out:
            raise ValueError(f"fusion attentions: the fused adapters have no {slot!r} slot.")
        probs = np.asarray(keras.ops.convert_to_numpy(out[key]), dtype=np.float64)  # [L, B, T, N]
        mask = x.get("attention_mask")
        mask = np.ones(probs.shape[1:3]) if mask is None else np.asarray(mask, dtype=np.float64)
        summed = np.einsum("lbtn,bt->ln", probs, mask)
        total = summed if total is None else total + summed
        count += float(mask.sum())
        if progbar is not None:
            progbar.update(i + 1)
    if total is None or count == 0:
        raise ValueError("fusion attentions: the dataset gave no tokens.")
    return total / count


def plot_fusion_heatmap(mean_attention, adapter_names, path, title="AdapterFusion attention"):
    """Write the paper's heatmap of mean attention (rows: blocks, columns: adapters) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(mean_attention)
    if data.ndim != 2 or data.shape[1] != len(adapter_names):
        raise ValueError(
            f"plot_fusion_heatmap: got attention of shape {data.shape} for {len(adapter_names)} adapters; "
            "expected [blocks, adapters]."
        )
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * data.shape[1], 0.9 + 0.45 * data.shape[0]))
    image = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=max(1e-6, float(data.max())), aspect="auto")
    ax.set_xticks(range(data.shape[1]), labels=list(adapter_names), rotation=30, ha="right")
    ax.set_yticks(range(data.shape[0]), labels=[f"block {i}" for i in range(data.shape[0])])
    for (r, c), v in np.ndenumerate(data):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="white" if v < data.max() * 0.6 else "black",
                fontsize=8)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
