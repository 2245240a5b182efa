"""jaxcomp: ten systems of learned compression and greedy optimisation in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="jaxcomp",
    version="0.1.0",
    description="L3C, context-model and GAN compression, born-again networks, StrassenNets, "
    "ECG classification and matching pursuits in JAX/Flax",
    python_requires=">=3.10",
    packages=find_packages(include=["jaxcomp", "jaxcomp.*"]),
    package_data={"jaxcomp": ["data/samples/*.png", "data/samples/*.md", "data/samples/*.json", "data/samples/mnist/*",
                               "codecs/pretrained/*.msgpack", "codecs/pretrained/*.json", "codecs/pretrained/*.md",
                               "metrics/pretrained/*.msgpack", "metrics/pretrained/*.json", "metrics/pretrained/*.md",
                               "ecg/templates/*.npz", "ecg/templates/*.md",
                               "ecg/pretrained/*.msgpack", "ecg/pretrained/*.json", "ecg/pretrained/*.md"]},
    # The JAX stack's floors are the versions the suite runs on (jax/jaxlib 0.10.2, flax 0.12.8,
    # optax 0.2.8, orbax-checkpoint 0.12.8, constriction 0.5.0): the code uses jax.typeof and newer
    # orbax restore arguments, and `import jaxcomp` sets an XLA flag that older jaxlibs do not know
    # (XLA aborts on an unknown flag). Older versions were never run.
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "constriction>=0.5",
        "tensorflow-datasets>=4.9",
        "numpy>=1.26",
        "ml_collections>=0.1.1",
        "pillow>=10",
        "tqdm>=4.60",
        "tensorboardX>=2.6",
        "scipy>=1.11",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3", "ruff>=0.5", "nbformat>=5", "nbclient>=0.10", "ipykernel>=6",
                "imagecodecs>=2024.1", "kymatio>=0.3"],
        "bench": ["imagecodecs>=2024.1"],
        "tf": ["tensorflow"],
        # NVIDIA GPUs: JAX's CUDA build (plain jax runs on the CPU only); jax[cuda13] for CUDA 13 drivers
        "cuda": ["jax[cuda12]"],
    },
    entry_points={"console_scripts": ["jaxcomp=jaxcomp.cli:main"]},
)
