"""Tasks and their data: mixing task batches for multi-task training (TensorFlow's tf.data).

TensorFlow is imported inside the functions that need it, so importing this
package does not import TensorFlow.
"""

from keras_adapterfusion.tasks.mixing import SAMPLING_RULES, mix_task_datasets, sampling_weights

__all__ = ["SAMPLING_RULES", "mix_task_datasets", "sampling_weights"]
