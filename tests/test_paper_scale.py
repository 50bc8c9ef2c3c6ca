"""The per-round traffic arithmetic that explains why the FSL-SAGE paper's ordering does not carry to ResNet-20."""

from __future__ import annotations

from experiments.paper_scale import CLIENTS, FLOAT, SAMPLES, SETUPS, Sizes, round_bytes


def test_cut_sizes_are_the_ones_the_docs_quote() -> None:
    here, paper = (Sizes.of(*SETUPS[setup]) for setup in ("here", "paper"))
    assert here.activation == FLOAT * 16 * 32 * 32  # ResNet-20 cut s: 16 x 32 x 32
    assert paper.activation == FLOAT * 128 * 4 * 4  # ResNet-18 after layer2: 128 x 4 x 4
    assert 11.1e6 < paper.model / FLOAT < 11.3e6 and 0.26e6 < here.model / FLOAT < 0.28e6


def test_fedavg_is_cheapest_here_and_dearer_than_fsl_sage_at_the_papers_model() -> None:
    here, paper = (Sizes.of(*SETUPS[setup]) for setup in ("here", "paper"))
    assert round_bytes("fedavg", here) < round_bytes("fsl-sage", here) / 50
    assert round_bytes("fedavg", paper) > 2 * round_bytes("fsl-sage", paper)


def test_formula_terms() -> None:
    sizes = Sizes(model=1000, slice=100, activation=10, heads={"cse-fsl": 7, "fsl-sage": 50})
    assert round_bytes("fedavg", sizes) == 2 * CLIENTS * 1000
    assert round_bytes("csl", sizes) - round_bytes("dsl", sizes) == SAMPLES * 10  # the gradients down
    assert round_bytes("cse-fsl", sizes, upload_every=5) == SAMPLES * 18 / 5 + 2 * CLIENTS * (100 + 7)
    assert round_bytes("fsl-sage", sizes, align_every=5) == SAMPLES * 18 / 5 + 2 * CLIENTS * 100 + CLIENTS * 50 / 5
