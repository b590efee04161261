"""A distributed search: this process's role, and the chief that serves the trials.

keras-tuner's chief/worker mode is used unchanged: run the same program on
every machine with `KERASTUNER_TUNER_ID` (`chief` on one, `tuner0`, `tuner1`,
... on the others), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` (the
chief's address). The chief only hands out trials and records them; the
workers train. `role` imports nothing beyond the standard library (the command
line calls it before TensorFlow loads). See `docs/tuning.md`.

Example:

```python
from keras_adapterfusion.tuning.distribution import role

role()  # None, "chief" or "worker"
```
"""

import os
import time

__all__ = ["role", "serve_as_chief"]


def role():
    """This process's part in a distributed search: `"chief"`, `"worker"`, or None (not distributed).

    keras-tuner's rule: distributed when `KERASTUNER_ORACLE_IP` is set; the
    chief is the process whose `KERASTUNER_TUNER_ID` contains `chief`.

    Returns:
        `"chief"`, `"worker"` or None.

    Example:

    ```python
    os.environ.update(KERASTUNER_TUNER_ID="tuner0", KERASTUNER_ORACLE_IP="10.0.0.1", KERASTUNER_ORACLE_PORT="8000")
    role()  # "worker"
    ```
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(name):
            raise ValueError(f"distributed search: KERASTUNER_ORACLE_IP is set but {name} is not; expected all "
                             "three of KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT.")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def serve_as_chief(oracle, poll_seconds=0.2):
    """Serve `oracle` to the workers over gRPC until the search is over and every worker has been told so.

    keras-tuner's own chief (`oracle_chief.start_server`) does the same with a
    20-second poll once the end is in sight; this one polls every
    `poll_seconds`.

    Args:
        oracle: the chief's oracle.
        poll_seconds: how often to check whether the search is over.

    Example:

    ```python
    serve_as_chief(tuner.oracle)  # what `search` does in the chief (KERASTUNER_TUNER_ID=chief)
    ```
    """
    # Imported here: `role` is read by the command line before Keras (which keras-tuner imports) loads.
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if not server.add_insecure_port(address):
        raise RuntimeError(f"distributed search: the chief cannot listen on {address}.")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=1.0)
