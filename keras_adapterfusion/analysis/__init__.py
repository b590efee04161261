"""Looking into trained fusions: their attentions (`attentions`), controlling and pruning adapters (`pruning`).

- `attentions`: `collect_fusion_attentions`, `plot_fusion_heatmap` (and the
  `FusionAttentionCallback` in `training.callbacks`).
- `pruning`: `adapter_importance`, `control_fusion` (exclude adapters or fix their weights at inference),
  `prune_fusion`, `drop_adapters`.

`keras_adapterfusion.analysis.collect_fusion_attentions` and
`plot_fusion_heatmap` (the names of the module this package replaced) load on
first use, so importing this package imports no Keras.
"""

from keras_adapterfusion.lazy import lazy_attributes

_LAZY = {
    "collect_fusion_attentions": "keras_adapterfusion.analysis.attentions",
    "plot_fusion_heatmap": "keras_adapterfusion.analysis.attentions",
    "FusionAttentionCallback": "keras_adapterfusion.training.callbacks",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
