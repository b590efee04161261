"""keras_adapterfusion: AdapterFusion for Keras 3 and TensorFlow."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "keras_adapterfusion", "version.py")) as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="keras-adapterfusion",
    version=VERSION,
    description="AdapterFusion (Pfeiffer et al., 2020) for Keras 3 and TensorFlow, with parity to AdapterHub",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_adapterfusion", "keras_adapterfusion.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.5",
        "transformers",
        "safetensors",
        "tensorflow-datasets",
        "keras-tuner",
        "scikit-learn",  # keras-tuner needs it for BayesianOptimization (tune's default) but does not declare it
        "tensorboard",  # --log-dir's TensorBoard logs
        "numpy",
        "matplotlib",
        # tensorflow-datasets needs it on every Python but declares it only for < 3.9
        # (tensorflow/datasets#11212).
        "importlib_resources",
    ],
    extras_require={
        # gRPC requests, and the raw-text signatures' in-graph tokenizers (2.21.0's wheel cannot load its ICU data).
        "serving": ["tensorflow-serving-api", "tensorflow-text>=2.21.1"],
        "keras-hub": ["keras-hub>=0.32"],
        "dev": ["pytest", "pytest-xdist", "jax[cpu]", "keras-hub>=0.32",  # from_keras_hub's parity tests
                "tensorflow-serving-api", "tensorflow-text>=2.21.1", "sentencepiece",
                # the documentation site (make docs, tests/test_docs.py)
                "mkdocs==1.6.1", "mkdocs-material==9.8.1", "mkdocstrings==1.0.8", "mkdocstrings-python==2.0.11"],
    },
    entry_points={"console_scripts": ["keras-adapterfusion=keras_adapterfusion.cli:main"]},
    license="Apache-2.0",
)
