"""BibTeX entries of the papers every MMoE model card cites."""

from __future__ import annotations

MMOE_BIBTEX = """@inproceedings{yu2024mmoe,
  title     = {{MMoE}: Enhancing Multimodal Models with Mixtures of Multimodal Interaction Experts},
  author    = {Yu, Haofei and Qi, Zhengyang and Jang, Lawrence and Salakhutdinov, Ruslan and
               Morency, Louis-Philippe and Liang, Paul Pu},
  booktitle = {Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
  pages     = {10006--10030},
  year      = {2024},
  address   = {Miami, Florida, USA},
  publisher = {Association for Computational Linguistics},
  doi       = {10.18653/v1/2024.emnlp-main.558},
  eprint    = {2311.09580},
  archivePrefix = {arXiv}
}"""

I2MOE_BIBTEX = """@inproceedings{xin2025i2moe,
  title     = {{I2MoE}: Interpretable Multimodal Interaction-aware Mixture-of-Experts},
  author    = {Xin, Jiayi and Yun, Sukwon and Peng, Jie and Choi, Inyoung and Ballard, Jenna L. and
               Chen, Tianlong and Long, Qi},
  booktitle = {Proceedings of the 42nd International Conference on Machine Learning (ICML)},
  year      = {2025},
  eprint    = {2505.19190},
  archivePrefix = {arXiv}
}"""

CITATIONS: list[dict[str, str]] = [
    {"name": "MMoE (Yu et al., EMNLP 2024)", "bibtex": MMOE_BIBTEX},
    {"name": "I2MoE (Xin et al., ICML 2025)", "bibtex": I2MOE_BIBTEX},
]
"""``[{"name", "bibtex"}]`` in the order the card lists them."""
