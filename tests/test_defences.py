"""The privacy defences (``flsplit.privacy.defences``): each changes what crosses as ``docs/privacy.md`` says.

Uploads are made through the ClientApp's own training path (``apps.client_app._train_once``,
where noise and label DP are applied) and the real codec, so what is asserted is what leaves.
"""

from __future__ import annotations

import math

import pytest
import torch

from flsplit.config import ConfigError
from flsplit.ledger import Ledger
from flsplit.privacy.dcor import distance_correlation
from flsplit.privacy.defences import generator, keep_probability, nopeek_loss, randomised_labels
from flsplit.wire import Packet, encode
from tests.halves import ThroughClientApp, drive_round, make_client, make_config, make_server
from strategies import ClientSlice, get_strategy

#: Every batch uploaded (cse-fsl, fsl-sage), a short alignment, no memory probe: small and fast.
FAST = {"memory-probe": 0, "upload-every": 1, "align-epochs": 1}
SPLIT_STRATEGIES = ["csl", "dsl", "hybrid", "splitfed-v1", "splitfed-v2", "cse-fsl", "fsl-sage"]


def _uploads(strategy: str, steps: int = 3, **keys: object) -> tuple[list[Packet], ClientSlice]:
    """One client's round of ``steps`` batches through the ClientApp path; its uploads with data, and the client."""
    config = make_config(strategy=strategy, **FAST | keys)
    client = make_client(config, strategy, steps=steps)
    half = ThroughClientApp(get_strategy(strategy).client(config))
    _, uploads = drive_round(half, make_server(config, strategy, get_strategy(strategy).server_slice(config)), client)
    return [u for u in uploads if u.tensors], client


def _ledger_bytes(uploads: list[Packet]) -> dict[str, int]:
    ledger = Ledger()
    for upload in uploads:
        ledger.count(0, "up", encode(upload))
    return ledger.round_summary()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("activation-noise", -0.1, "activation-noise: Input should be greater than or equal to 0"),
        ("nopeek-weight", -1.0, "nopeek-weight: Input should be greater than or equal to 0"),
        ("label-dp-epsilon", 0.0, 'label-dp-epsilon: must be > 0 .*set label-dp = "off"'),
        ("label-dp-epsilon", math.inf, "label-dp-epsilon: Input should be a finite number"),
        ("label-dp", "laplace", "label-dp: Input should be 'off' or 'rr'"),
        ("gradient-noise", -0.5, "gradient-noise: Input should be greater than or equal to 0"),
    ],
)
def test_bad_defence_settings_are_refused_naming_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(**{key: value})


def test_fedavg_refuses_every_defence_it_would_silently_ignore() -> None:
    # Execute
    with pytest.raises(ConfigError) as refused:
        make_config(strategy="fedavg", **{"activation-noise": 0.1, "nopeek-weight": 0.5, "label-dp": "rr", "gradient-noise": 1.0})
    # Assert: one line per key, and fedavg with the defaults still runs
    lines = str(refused.value).splitlines()[1:]
    assert [line.split(":")[0].strip(" -") for line in lines] == ["activation-noise", "nopeek-weight", "label-dp", "gradient-noise"]
    assert all("uploads no activations" in line for line in lines)
    assert make_config(strategy="fedavg").activation_noise == 0


@pytest.mark.parametrize(
    ("strategy", "key", "value", "message"),
    [
        ("csl-u", "label-dp", "rr", "label-dp: strategy 'csl-u' keeps its labels on the client.*set gradient-noise"),
        ("dsl-u", "label-dp", "rr", "label-dp: strategy 'dsl-u' keeps its labels on the client"),
        ("csl", "gradient-noise", 0.5, "gradient-noise: strategy 'csl' uploads no gradients.*U-shaped strategies"),
        ("dsl", "gradient-noise", 0.5, "gradient-noise: strategy 'dsl' uploads no gradients"),
    ],
)
def test_a_defence_of_what_a_topology_never_uploads_is_refused_naming_the_one_that_fits(
    strategy: str, key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(strategy=strategy, **{key: value})


@pytest.mark.parametrize("strategy", ["csl-u", "dsl-u"])
def test_gradient_noise_changes_the_returned_dz2_by_sigma_std_g_and_nothing_else(strategy: str) -> None:
    # Prepare
    sigma = 2.0
    # Execute: the same round without and with noise
    clean, _ = _uploads(strategy, steps=2)
    noisy, _ = _uploads(strategy, steps=2, **{"gradient-noise": sigma})
    # Assert: z1 then dL/dz2 per batch; the first z1 and the first dL/dz2 left before anything
    # trained, so the gradient's difference is the noise alone, of std sigma x std(g)
    assert [sorted(u.tensors) for u in noisy] == [["activations"], ["gradients"]] * 2
    assert torch.equal(clean[0].activations, noisy[0].activations)
    g_clean, g_noisy = clean[1].gradients, noisy[1].gradients
    assert float((g_noisy - g_clean).std() / g_clean.std()) == pytest.approx(sigma, rel=0.05)
    assert g_noisy.dtype == g_clean.dtype and g_noisy.shape == g_clean.shape
    assert _ledger_bytes(noisy) == _ledger_bytes(clean)


@pytest.mark.parametrize("strategy", SPLIT_STRATEGIES)
def test_activation_noise_changes_the_uploaded_activations_by_sigma_std_z_and_no_byte(strategy: str) -> None:
    # Prepare
    sigma = 0.5
    # Execute: the same round without and with noise
    clean, _ = _uploads(strategy, steps=2)
    noisy, _ = _uploads(strategy, steps=2, **{"activation-noise": sigma})
    # Assert: the first upload left before any gradient could make the runs differ, so its
    # difference is the noise alone, of std sigma x std(z); the ledger counts the same bytes
    z_clean, z_noisy = clean[0].activations, noisy[0].activations
    assert float((z_noisy - z_clean).std() / z_clean.std()) == pytest.approx(sigma, rel=0.05)
    assert z_noisy.dtype == z_clean.dtype and z_noisy.shape == z_clean.shape
    assert all(torch.equal(a.labels, b.labels) for a, b in zip(clean, noisy))
    assert _ledger_bytes(noisy) == _ledger_bytes(clean)


def test_noise_and_randomised_labels_are_drawn_again_on_a_rerun() -> None:
    # Prepare
    defended = {"activation-noise": 0.5, "label-dp": "rr", "label-dp-epsilon": 0.5}
    # Execute
    first, _ = _uploads("csl", **defended)
    rerun, _ = _uploads("csl", **defended)
    # Assert
    assert all(torch.equal(a.activations, b.activations) and torch.equal(a.labels, b.labels) for a, b in zip(first, rerun))


def test_the_client_trains_on_clean_activations_and_true_labels_whatever_goes_up() -> None:
    # Prepare: DSL's client learns from its auxiliary loss alone, so nothing the server sees changes it
    defended = {"activation-noise": 1.0, "label-dp": "rr", "label-dp-epsilon": 0.1}
    # Execute
    plain_uploads, plain = _uploads("dsl")
    defended_uploads, defended_client = _uploads("dsl", **defended)
    # Assert: the same client weights, and other tensors sent
    for a, b in zip(plain.bottom.state_dict().values(), defended_client.bottom.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(plain_uploads[0].activations, defended_uploads[0].activations)
    assert not torch.equal(plain_uploads[0].labels, defended_uploads[0].labels)


@pytest.mark.parametrize(("epsilon", "classes"), [(1.0, 10), (3.0, 10), (0.5, 3)])
def test_randomised_response_keeps_each_label_at_its_rate_and_spreads_the_rest_uniformly(epsilon: float, classes: int) -> None:
    # Prepare: 60,000 labels of class 0
    n = 60_000
    y = torch.zeros(n, dtype=torch.int64)
    # Execute
    sent = randomised_labels(y, epsilon, classes, generator(0, 0, 0, 2))
    # Assert: e^eps / (e^eps + k - 1) kept, each other class (1 - that) / (k - 1); within 4 standard errors
    keep = math.exp(epsilon) / (math.exp(epsilon) + classes - 1)
    assert keep_probability(epsilon, classes) == pytest.approx(keep)
    counts = torch.bincount(sent, minlength=classes).double() / n
    expected = torch.tensor([keep] + [(1 - keep) / (classes - 1)] * (classes - 1), dtype=torch.float64)
    tolerance = 4 * torch.sqrt(expected * (1 - expected) / n)
    assert bool(((counts - expected).abs() < tolerance).all()), (counts, expected)


@pytest.mark.parametrize("strategy", ["csl", "dsl", "fsl-sage"])
def test_label_dp_sends_randomised_labels_and_off_sends_the_true_ones(strategy: str) -> None:
    # Prepare: epsilon = 0 would keep 1 in 10; 0.2 keeps 12 %
    epsilon = 0.2
    # Execute
    true, client = _uploads(strategy)
    randomised, _ = _uploads(strategy, **{"label-dp": "rr", "label-dp-epsilon": epsilon})
    # Assert: off, the data's own labels go up; on, about the expected share of those 48 is
    # kept; the activations are untouched
    y_true = torch.cat([u.labels for u in true])
    assert torch.equal(y_true, torch.cat([client.loader.batch(step)[1] for step in range(3)]))
    y_sent = torch.cat([u.labels for u in randomised])
    kept = float((y_true == y_sent).float().mean())
    assert abs(kept - keep_probability(epsilon, 10)) < 4 * math.sqrt(0.12 * 0.88 / len(y_true))
    assert torch.equal(true[0].activations, randomised[0].activations)
    assert bool(((y_sent >= 0) & (y_sent < 10)).all())


@pytest.mark.parametrize("strategy", ["csl", "dsl", "hybrid", "fsl-sage", "csl-u", "dsl-u"])
def test_nopeek_adds_alpha_times_the_gradient_of_dcor_to_the_clients_first_step(strategy: str) -> None:
    # Prepare: one batch without and with NoPeek; the server's reply to it (if any) is the same
    # in both, as the first upload leaves before anything trains
    alpha, lr = 0.5, 0.1
    moved = {}
    for weight in (0.0, alpha):
        config = make_config(strategy=strategy, **FAST | {"nopeek-weight": weight})
        client = make_client(config, strategy, steps=1)
        before = {k: p.detach().clone() for k, p in client.bottom.named_parameters()}
        # Execute
        drive_round(get_strategy(strategy).client(config), make_server(config, strategy, get_strategy(strategy).server_slice(config)), client)
        moved[weight] = {k: p.detach() - before[k] for k, p in client.bottom.named_parameters()}
    # Assert: SGD's first step is -lr * gradient, so the difference is -lr * alpha * d dCor(x, bottom(x)) / d theta
    reference = make_client(config, strategy, steps=1).bottom
    x, _ = make_client(config, strategy, steps=1).loader.batch(0)
    grads = torch.autograd.grad(distance_correlation(x.double(), reference(x).double()), list(reference.parameters()))
    for (name, _), grad in zip(reference.named_parameters(), grads):
        assert torch.allclose(moved[alpha][name] - moved[0.0][name], -lr * alpha * grad, atol=1e-6, rtol=1e-3), name


def test_nopeek_lowers_the_distance_correlation_on_a_toy_problem() -> None:
    # Prepare: 4-d inputs whose label is the sign of the first coordinate; a linear bottom and head
    config = make_config(**{"nopeek-weight": 1.0})
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()

    def trained_dcor(nopeek: bool) -> float:
        torch.manual_seed(0)
        bottom, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
        optimizer = torch.optim.SGD([*bottom.parameters(), *head.parameters()], lr=0.1)
        for _ in range(200):
            z = bottom(x)
            penalty = nopeek_loss(config, x, z) if nopeek else None
            loss = torch.nn.functional.cross_entropy(head(z), y) + (penalty if penalty is not None else 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return float(distance_correlation(x, bottom(x)))

    # Execute
    without, with_nopeek = trained_dcor(False), trained_dcor(True)
    # Assert: the task needs only x[:, 0], so NoPeek drops some of the rest of x (0.73 to 0.62 here;
    # activations that kept x[:, 0] alone would still score about 0.6)
    assert with_nopeek < without - 0.05, (without, with_nopeek)
