"""Complete runs on the offline encoder and data: the demo (`demo`) and the learning curve (`learning_curve`).

- `demo`: `run_demo`, what `keras-adapterfusion demo` runs (three source adapters,
  a fusion on the target, the heatmap).
- `learning_curve`: fusion against a single adapter over target sizes and seeds
  (`python -m keras_adapterfusion.applications.learning_curve`).
"""
