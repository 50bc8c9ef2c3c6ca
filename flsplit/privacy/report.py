"""``flsplit leak``: run every attack on one round of a finished run and write what leaked.

Writes ``leak.json`` (every number), ``leak.md`` (the same as tables, with what each attacker
knew) and ``leak_reconstruction.png`` (originals above their reconstructions) into the run
folder. Over several runs, ``plot_leakage`` puts test accuracy against leakage. docs/privacy.md
states the threat model and what each number means.

A U-shaped run's server holds a middle, not a classifier of ``z``, and no label: its attacks are
the white-box ones on ``z1``, dCor, and the label attacks on the ``dL/dz2`` it recorded
(``gradient_record``); the black-box ones, which go through the server's classifier, are left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from flsplit import checkpoint
from flsplit.data import Dataset
from flsplit.markdown import markdown_table
from flsplit.privacy.attack_data import AttackData, attack_data
from flsplit.privacy.attacked_run import AttackedRun, open_run
from flsplit.privacy.dcor import batched_distance_correlation
from flsplit.privacy.defences import defences_of
from flsplit.privacy.gradient_leakage import LeakAUC, direction_attack, norm_attack
from flsplit.privacy.gradient_record import gradient_record_path
from flsplit.privacy.inversion import reconstruct, save_grid, score_reconstructions, train_decoder
from flsplit.privacy.label_inference import infer_labels
from flsplit.privacy.surrogate import train_surrogate_bottom
from flsplit.results import read_metrics
from flsplit.status import write_json_atomic

LEAK_JSON, LEAK_MD, LEAK_GRID = "leak.json", "leak.md", "leak_reconstruction.png"

#: What each attacker is given, as the report states it beside every number.
KNOWLEDGE = {
    "white-box": "the client's bottom slice from the round's checkpoint (an upper bound: a CSL/DSL server "
    "that does not average client slices never holds it)",
    "black-box": "the architecture, the server's own top slice and the observed activations; a surrogate "
    "bottom is trained on the auxiliary set through the frozen top, its activation statistics matched to "
    "the observed ones (UnSplit/SDAR-like)",
    "baseline": "nothing but the auxiliary set: the mean auxiliary image as every reconstruction",
    "gradients received": "honest-but-curious server, gradients it received: the dL/dz2 the attacked client "
    "returned in the round's first record-gradient-batches batches, exactly as received, and, for the direction "
    "attack, the label of one reference sample per class (the first recorded row of that class)",
}
#: The attackers of each topology's report.
ATTACKERS = {"label-sharing": ("white-box", "black-box", "baseline"), "u-shaped": ("white-box", "baseline", "gradients received")}
#: What a U-shaped run's report leaves out, and why.
U_SHAPED_LEFT_OUT = (
    "black-box reconstruction and label inference: both go through the server's own classifier of z (the "
    "surrogate is trained through it; its argmax is the label guess), and a U-shaped server holds a middle that "
    "outputs z2, with no classifier and no label"
)


@dataclass(frozen=True)
class LeakOptions:
    """How much data and training the attacks get (defaults for CIFAR-10; tests shrink them)."""

    round_number: int | None = None  # None: the last round with both slices on disk
    partition: int = 0
    aux_size: int = 1000
    target_size: int = 500
    decoder_epochs: int = 20
    decoder_width: int = 64
    surrogate_epochs: int = 10
    probe_epochs: int = 200
    shots: int = 10
    dcor_batch: int = 256
    seed: int = 0
    data_dir: str | None = None


def leak(run_dir: str | Path, options: LeakOptions = LeakOptions()) -> dict[str, Any]:
    """Attack ``run_dir`` at the chosen round, write the three files, and return ``leak.json``'s content."""
    run = open_run(run_dir, options.round_number, options.partition, options.data_dir)
    data = run.dataset()
    sets = attack_data(data, run.partition_of(data), options.aux_size, options.target_size, options.seed)
    found, grid_rows = _attack(run, sets, options, data.num_classes)
    if run.topology == "u-shaped":
        found |= {"gradient_label_leakage": received_gradient_leakage(run, data), "left_out": [U_SHAPED_LEFT_OUT]}
    save_grid(grid_rows, run.run_dir / LEAK_GRID)
    result = _header(run, sets, options) | found | {"files": {"grid": LEAK_GRID, "markdown": LEAK_MD}}
    write_json_atomic(run.run_dir / LEAK_JSON, result)
    (run.run_dir / LEAK_MD).write_text(leak_markdown(result), encoding="utf-8")
    return result


def _attack(run: AttackedRun, sets: AttackData, options: LeakOptions, num_classes: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    aux = sets.auxiliary
    z_aux = _forward(run.bottom, aux.x)
    z = {name: _forward(run.bottom, target.x) for name, target in sets.targets.items()}
    classifier = run.topology == "label-sharing"  # the server's slice classifies z: the black-box attacks use it

    # --- RECONSTRUCTION ---
    decoder_options = {"epochs": options.decoder_epochs, "width": options.decoder_width, "seed": options.seed}
    decoders = {"white-box": train_decoder(z_aux, aux.pixels, **decoder_options)}
    if classifier:
        surrogate = train_surrogate_bottom(
            run.bottom, run.top, aux.x, aux.labels, z["train"], epochs=options.surrogate_epochs, seed=options.seed
        )
        decoders["black-box"] = train_decoder(_forward(surrogate, aux.x), aux.pixels, **decoder_options)
    mean_image = aux.pixels.mean(dim=0, keepdim=True)
    reconstructions = {
        name: {attacker: reconstruct(decoder, z[name]) for attacker, decoder in decoders.items()} | {"baseline": mean_image.expand_as(target.pixels)}
        for name, target in sets.targets.items()
    }
    reconstruction = {
        attacker: {name: asdict(score_reconstructions(reconstructions[name][attacker], target.pixels)) for name, target in sets.targets.items()}
        for attacker in (*decoders, "baseline")
    }
    grid = {"original": sets.targets["train"].pixels} | {attacker: reconstructions["train"][attacker] for attacker in decoders}

    # --- LABEL INFERENCE ---
    label_inference: dict[str, Any] = {"white-box": {}} | ({"black-box": {}} if classifier else {})
    for name, target in sets.targets.items():
        found = infer_labels(z_aux, aux.labels, z[name], target.labels, num_classes, options.shots, options.probe_epochs, options.seed)
        label_inference["white-box"][name] = asdict(found)
        if classifier:
            top_guess = _forward(run.top, z[name]).argmax(dim=1)
            label_inference["black-box"][name] = {"top_accuracy": float((top_guess == target.labels).float().mean()), "chance": found.chance}

    # --- DISTANCE CORRELATION ---
    dcor = {name: batched_distance_correlation(target.x, z[name], options.dcor_batch) for name, target in sets.targets.items()}
    dcor["batch_size"] = options.dcor_batch
    gradients = {
        "measured": False,
        "why": "a label-sharing split returns dL/dz from the server, which already holds the labels; the norm and "
        "direction attacks (flsplit.privacy.gradient_leakage) apply to the dL/dz2 a U-shaped client returns",
    }
    return {"reconstruction": reconstruction, "label_inference": label_inference, "dcor": dcor, "gradient_label_leakage": gradients}, grid


def received_gradient_leakage(run: AttackedRun, data: Dataset) -> dict[str, Any]:
    """The norm and direction leak AUC of the ``dL/dz2`` the server recorded from the attacked client.

    The server never saw a label: each row's true label is read back from the run's data, at the
    step of its batch (the round's first step, from the client's checkpoint, plus the batch's
    position in the round), only to score the attacks.
    """
    path = gradient_record_path(run.run_dir, run.round, run.partition)
    if not path.exists():
        return {
            "measured": False,
            "why": f"no {path.relative_to(run.run_dir)}: the server records dL/dz2 only in the rounds keep-rounds keeps, "
            "with record-gradient-batches above 0",
        }
    recorded = checkpoint.load(path)
    steps = run.counters["round_start"] + recorded["round_batch"]
    labels = _labels_at(run, data, steps, recorded["row"])
    try:
        norm, direction = norm_attack(recorded["gradients"], labels), direction_attack(recorded["gradients"], labels)
    except ValueError as err:  # too few classes among the recorded rows
        return {"measured": False, "why": f"{path.relative_to(run.run_dir)}: {err}"}
    assert direction.reference_index is not None
    references = {
        str(c): {"index": i, "step": int(steps[i]), "row": int(recorded["row"][i])} for c, i in direction.reference_index.items()
    }
    return {
        "measured": True,
        "attacker": "honest-but-curious server, gradients it received",
        "tensor": "dL/dz2",
        "file": str(path.relative_to(run.run_dir)),
        "samples": len(labels),
        "steps": sorted({int(s) for s in steps}),
        "norm": _auc(norm),
        "direction": _auc(direction)
        | {
            "reference_rule": "the first recorded row of each class (earliest batch, then lowest row), its label given "
            "to the attacker and the row left out of its own scoring",
            "references": references,
        },
    }


def _labels_at(run: AttackedRun, data: Dataset, steps: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The true label of each recorded row: row ``rows[i]`` of the client's batch ``steps[i]``."""
    loader = run.loader(data)
    batches = {int(s): loader.batch(int(s))[1] for s in torch.unique(steps)}
    for step, labels in batches.items():
        if int((steps == step).sum()) != len(labels):
            raise ValueError(
                f"{run.run_dir}: the recorded dL/dz2 of step {step} has {int((steps == step).sum())} rows, the client's "
                f"batch {len(labels)}: the run's data (--data-dir) is not the data it trained on"
            )
    return torch.stack([batches[int(s)][int(r)] for s, r in zip(steps, rows, strict=True)])


def _auc(found: LeakAUC) -> dict[str, Any]:
    return {"mean": found.mean, "best": found.best, "per_class": {str(c): v for c, v in found.per_class.items()}}


def _forward(module: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([module(x[start : start + batch_size]) for start in range(0, len(x), batch_size)])


def _header(run: AttackedRun, sets: AttackData, options: LeakOptions) -> dict[str, Any]:
    recorded = run.recorded
    accuracy = _accuracy_at(run.run_dir, run.round)
    return {
        "run": run.run_dir.name,
        "round": run.round,
        "partition": run.partition,
        "strategy": run.config.strategy,
        "topology": run.topology,
        "model": run.config.model,
        "cut": run.config.cut,
        "cut_blocks": run.config.cut_blocks,
        "dataset": run.config.dataset,
        "client_sync": recorded.get("client_sync", ""),
        "defences": defences_of(run.config),
        "test_accuracy": accuracy,
        "data": sets.description,
        "knowledge": {k: KNOWLEDGE[k] for k in ATTACKERS[run.topology]},
        "options": {k: v for k, v in asdict(options).items() if k != "data_dir"},
    }


def _accuracy_at(run_dir: Path, round_number: int) -> float | None:
    """The test accuracy last scored at or before ``round_number`` (``eval-every`` may skip rounds)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    scored = [m["test_accuracy"] for m in read_metrics(path) if int(m["round"]) <= round_number and m.get("test_accuracy") is not None]
    return float(scored[-1]) if scored else None


def leak_markdown(result: dict[str, Any]) -> str:
    """``leak.json`` as a page a person reads: what was attacked, each attacker, each number."""
    accuracy = result["test_accuracy"]
    lines = [
        f"# What leaks: {result['run']}, round {result['round']}",
        "",
        f"{result['strategy']}, {result['model']} cut `{result['cut']}` ({result['cut_blocks']} blocks on the client), "
        f"{result['dataset']}; client {result['partition']}; test accuracy at this round "
        f"{'-' if accuracy is None else f'{100 * accuracy:.1f} %'}; defences: {_defences_text(result)}. "
        "Threat model and meanings: docs/privacy.md.",
        "",
        *(f"- {name}: {text}" for name, text in result["data"].items()),
        "",
        "## Input reconstruction (pixels in [0, 1]; per-image means)",
        "",
    ]
    rows = [
        {"attacker": attacker, "images": name, "MSE": s["mse"], "PSNR dB": s["psnr"], "SSIM": s["ssim"]}
        for attacker, by_set in result["reconstruction"].items()
        for name, s in by_set.items()
    ]
    lines += [markdown_table(rows), f"![originals above their reconstructions]({result['files']['grid']})", "", "## Label inference from activations", ""]
    rows = []
    for name, found in result["label_inference"]["white-box"].items():
        rows.append({"attacker": "white-box linear probe", "images": name, "accuracy": found["probe_accuracy"], "chance": found["chance"]})
        rows.append({"attacker": f"white-box nearest centroid ({found['centroid_shots']} per class)", "images": name, "accuracy": found["centroid_accuracy"], "chance": found["chance"]})
    for name, found in result["label_inference"].get("black-box", {}).items():
        rows.append({"attacker": "black-box: the server's own top", "images": name, "accuracy": found["top_accuracy"], "chance": found["chance"]})
    dcor = result["dcor"]
    lines += [
        markdown_table(rows),
        "## Distance correlation dCor(x, z)",
        "",
        f"train {dcor['train']:.4f}, test {dcor['test']:.4f} (mean over batches of {dcor['batch_size']}; 0: independent, 1: z a similarity transform of x).",
        "",
        "## Label leakage from returned gradients",
        "",
        *_gradient_lines(result["gradient_label_leakage"]),
        "",
        *(["## Left out", "", *(f"- {why}" for why in result["left_out"]), ""] if result.get("left_out") else []),
        "## What each attacker knew",
        "",
        *(f"- **{name}**: {text}" for name, text in result["knowledge"].items()),
        "",
    ]
    return "\n".join(lines)


def _defences_text(result: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in result.get("defences", {}).items()) or "none"


def leak_summary(result: dict[str, Any]) -> str:
    """One line per run for the terminal: the headline of each attack on the client's own images."""
    white_box = result["reconstruction"]["white-box"]["train"]
    probe = result["label_inference"]["white-box"]["train"]
    parts = [
        f"round {result['round']}, defences: {_defences_text(result)}",
        f"white-box PSNR {white_box['psnr']:.1f} dB, SSIM {white_box['ssim']:.3f}",
        f"label probe {100 * probe['probe_accuracy']:.1f} % (chance {100 * probe['chance']:.0f} %)",
        f"dCor {result['dcor']['train']:.3f}",
    ]
    gradients = result["gradient_label_leakage"]
    if gradients["measured"]:
        parts.append(f"dL/dz2 leak AUC: direction {gradients['direction']['mean']:.3f}, norm best {gradients['norm']['best']:.3f}")
    return "; ".join(parts)


def _gradient_lines(found: dict[str, Any]) -> list[str]:
    """The gradient attacks' section of ``leak.md``: leak AUC per attack and class, and the references."""
    if not found["measured"]:
        return [f"not measured: {found['why']}"]
    classes = sorted(found["norm"]["per_class"], key=int)
    rows = [
        {"attack": name, "mean AUC": found[name]["mean"], "best AUC": found[name]["best"]}
        | {f"class {c}": found[name]["per_class"].get(c) for c in classes}
        for name in ("norm", "direction")
    ]
    references = ", ".join(f"class {c}: step {r['step']} row {r['row']}" for c, r in found["direction"]["references"].items())
    return [
        f"Attacker: {found['attacker']} ({found['tensor']}, {found['samples']} samples of steps {found['steps']}, "
        f"`{found['file']}`). One-vs-rest leak AUC: 0.5 chance, 1.0 every label recovered; the norm attack's mean is "
        "0.5 by construction on balanced classes, read its per-class AUCs and best.",
        "",
        markdown_table(rows),
        f"Direction attack's reference samples, labels known to the attacker ({found['direction']['reference_rule']}): {references}.",
    ]


def plot_leakage(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Test accuracy against white-box reconstruction PSNR and label-probe accuracy, one point per run,
    and against the direction attack's leak AUC on ``dL/dz2`` when a U-shaped run is among them."""
    path = Path(path)
    measures = [
        ("white-box reconstruction PSNR on the client's images (dB)", lambda r: r["reconstruction"]["white-box"]["train"]["psnr"]),
        ("white-box label-probe accuracy on the client's images", lambda r: r["label_inference"]["white-box"]["train"]["probe_accuracy"]),
    ]
    if any(r["gradient_label_leakage"]["measured"] for r in results):
        measures.append((
            "direction attack's mean leak AUC on dL/dz2 (U-shaped)",
            lambda r: r["gradient_label_leakage"]["direction"]["mean"] if r["gradient_label_leakage"]["measured"] else math.nan,
        ))
    figure = Figure(figsize=(5.5 * len(measures), 4.4), layout="constrained")
    panels = figure.subplots(1, len(measures))
    for axis, (label, measure) in zip(panels, measures, strict=True):
        for result in results:
            accuracy = result["test_accuracy"]
            leakage = measure(result)
            if accuracy is None or not math.isfinite(leakage):
                continue
            axis.scatter([leakage], [100 * accuracy])
            axis.annotate(f"{result['run']} r{result['round']}", (leakage, 100 * accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel(label + "  → more leakage")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    figure.suptitle("Accuracy against leakage (flsplit leak)")
    figure.savefig(path, dpi=110)
    return path


def read_leak(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``leak.json`` written earlier."""
    path = Path(run_dir) / LEAK_JSON
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no {LEAK_JSON}; run flsplit leak on it first (without --reuse)")
    return json.loads(path.read_text(encoding="utf-8"))
