"""Searching fusion set-ups with keras-tuner: the space, the hypermodel, the tuners, distribution, reports.

Stage 2 of AdapterFusion has more settings than a learning rate: the fusion
preset and its switches, which source adapters take part, the regularization
of the value matrix, dropout, batch size and epochs. `FusionHyperModel` is a
`keras_tuner.HyperModel` over exactly those; `search` runs keras-tuner's
Bayesian optimization (the default), Hyperband or random search over it, with
the target task's validation metric as the objective.

| module | what it holds |
|---|---|
| `space` | `FusionSearchSpace`, `TrialSetUp`, `fusion_config_from_values`, `trial_seed` (no Keras: the command line reads it first) |
| `hypermodel` | `FusionHyperModel`: builds one trial's stage-2 model from the loaded encoder and fits it |
| `tuners` | `search`, `FusionTuner` and the three tuners, `enable_compilation_cache` |
| `distribution` | `role` and `serve_as_chief` (keras-tuner's chief/worker mode) |
| `reports` | `trial_rows`, `best_trial`, `write_reports`, `plot_trials` |

**Trials are independent.** A trial's model runs on its own copy of the
encoder (`backbones.copy_encoder`, with only the trial's adapters and no
fusion); the loaded encoder itself is never changed. Each trial seeds Keras
from the search's seed and the trial's values, so a set-up gives the same
result whichever trials ran before it.

**Trial start-up is kept cheap.** Every training batch has the same shape
(`tasks.batches.FullBatches`), validation batches too, so each trial compiles
one training step and one prediction step; the learning rate and the length of
its linear decay are optimizer variables, not constants of the compiled step,
so trials that differ only in them compile the same program, which JAX's
persistent compilation cache (`enable_compilation_cache`, or
`search(compilation_cache_dir=...)`) then serves from disk.

**Distributed search** uses keras-tuner's chief/worker mode unchanged (see
`tuning.distribution` and `docs/tuning.md`).

Every name here loads on first use: importing `keras_adapterfusion.tuning` (or
reading the space) imports neither Keras, keras-tuner nor TensorFlow. Searches
run on the TensorFlow and JAX backends (on JAX without TensorFlow installed).

Example:

```python
from keras_adapterfusion import load_encoder, load_tokenizer, tuning
from keras_adapterfusion.formats import native as saving
from keras_adapterfusion.training.runs import prepare

encoder = load_encoder("path/to/bert")
names = [saving.load_adapter(encoder, d) for d in ("adapters/movie", "adapters/news", "adapters/subj")]
tokenizer = load_tokenizer("path/to/bert")
train = prepare("vader_tweets", tokenizer, "train", max_length=64, sample=300)
validation = prepare("vader_tweets", tokenizer, "validation", max_length=64, limit=500)
hypermodel = tuning.FusionHyperModel(encoder, names, task="vader_tweets")
tuner = tuning.search(hypermodel, train, validation, tuner="bayesian", max_trials=20, directory="search")
best = tuning.fusion_config_from_values(tuner.oracle.get_best_trials(1)[0].hyperparameters.values)
```
"""

from keras_adapterfusion.lazy import lazy_attributes

_HOMES = {
    "keras_adapterfusion.tuning.space": ("CACHE_DIR", "MAX_SUBSETS", "PRESETS", "REPORT_FILES", "SEARCH_DIR",
                                         "SETTINGS_FILE", "TRIAL_METRICS", "TUNERS", "FusionSearchSpace",
                                         "TrialSetUp", "fusion_config_from_values", "trial_seed"),
    "keras_adapterfusion.tuning.hypermodel": ("FusionHyperModel",),
    "keras_adapterfusion.tuning.tuners": ("FusionBayesianOptimization", "FusionHyperband", "FusionRandomSearch",
                                          "FusionTuner", "enable_compilation_cache", "search"),
    "keras_adapterfusion.tuning.distribution": ("role", "serve_as_chief"),
    "keras_adapterfusion.tuning.reports": ("best_trial", "plot_trials", "trial_rows", "write_reports"),
}
_LAZY = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
