"""The one place where run-config keys are defined and validated.

Keys are kebab-case, as in ``[tool.flwr.app.config]``. Validation runs before any training,
and every bad key is reported in one message that names the key and what it accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from flsplit.aggregation import check_aggregation
from flsplit.data import BUILT_IN, HF_PREFIX, DataOptions, describe_dataset
from flsplit.models import get_builder, head_names, resolve_cut


class ConfigError(ValueError):
    """Raised when the run config has bad keys or values; the message lists all of them."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class RunConfig(BaseModel):
    """Validated run configuration (see the settings table in the README)."""

    model_config = ConfigDict(
        alias_generator=_kebab, extra="forbid", frozen=True, protected_namespaces=()
    )

    strategy: str = "dsl"
    model: str = "resnet20"
    cut: str = "s"
    aux_head: str = ""  # empty: the strategy's default (see ``head``)
    dataset: str = "cifar10"
    data_dir: str = ""
    image_size: int = Field(0, ge=0)  # 0: keep the images' own size
    test_fraction: float = Field(0.0, ge=0, lt=1)  # > 0: hold out part of train when there is no test split
    image_column: str = ""  # hf: datasets; empty: detect
    label_column: str = ""
    partition: Literal["iid", "dirichlet", "pathological"] = "iid"
    dirichlet_alpha: float = Field(1.0, gt=0)
    classes_per_client: int = Field(2, ge=1)
    num_server_rounds: int = Field(3, ge=1)
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    lr_schedule: Literal["constant", "cosine", "step"] = "constant"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    aggregate_clients: bool = False
    seed: int = Field(0, ge=0)
    results_dir: str = "results"
    run_name: str = ""
    max_batches: int = Field(0, ge=0)
    eval_samples: int = Field(0, ge=0)
    chunk_mb: float = Field(64.0, gt=0)
    min_clients: int = Field(1, ge=1)
    message_timeout: float = Field(600.0, gt=0)
    resume: bool = False
    tensorboard: bool = False
    wire_dtype: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    memory_probe: int = Field(3, ge=0)
    client_cache: int = Field(8, ge=0)
    aggregation: str = "FedAvg"
    serve_order: Literal["", "sequential", "interleaved"] = ""  # empty: the strategy's own order
    upload_every: int = Field(5, ge=1)
    align_every: int = Field(10, ge=1)
    align_buffer: int = Field(1000, ge=1)
    align_epochs: int = Field(100, ge=1)
    align_lr: float = Field(1e-3, gt=0)
    hybrid_lambda: float = Field(0.1, ge=0)
    hybrid_k: int = Field(5, ge=1)
    hybrid_aux_weight: float = Field(1.0, ge=0)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("strategies")
        if known is not None and value not in known and "." not in value:
            raise ValueError(f"unknown strategy '{value}'; choose one of {sorted(known)}")
        return value

    @field_validator("aggregation")
    @classmethod
    def _known_aggregation(cls, value: str) -> str:
        return check_aggregation(value)  # raises ValueError naming the supported strategies

    @field_validator("hybrid_aux_weight")
    @classmethod
    def _hybrid_client_has_a_loss(cls, value: float, info: ValidationInfo) -> float:
        if value == 0 and info.data.get("hybrid_lambda") == 0 and info.data.get("strategy") == "hybrid":
            raise ValueError(
                "with hybrid-lambda = 0 too, the hybrid client has no loss to train on; "
                "set hybrid-aux-weight > 0 (DSL-like) or hybrid-lambda > 0 (CSL-like)"
            )
        return value

    @field_validator("cut", mode="before")
    @classmethod
    def _cut_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value not in BUILT_IN and not (value.startswith(HF_PREFIX) and len(value) > len(HF_PREFIX)):
            raise ValueError(
                f"unknown dataset '{value}'; choose one of {list(BUILT_IN)} or 'hf:<name>' (a Hugging Face dataset)"
            )
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        try:
            get_builder(value)
        except ValueError as err:
            raise ValueError(str(err).removeprefix("model: ")) from None
        return value

    @field_validator("aux_head")
    @classmethod
    def _known_head(cls, value: str) -> str:
        if value and value not in head_names():
            raise ValueError(f"unknown head '{value}'; choose one of {head_names()}")
        return value

    @field_validator("cut")
    @classmethod
    def _valid_cut(cls, value: str, info: ValidationInfo) -> str:
        model = info.data.get("model")
        if model is not None:
            try:
                resolve_cut(value, model)  # raises ValueError naming the allowed range
            except ValueError as err:
                raise ValueError(str(err).removeprefix("cut: ")) from None
        return value

    @property
    def cut_blocks(self) -> int:
        """The cut as a number of residual blocks kept on the client."""
        return resolve_cut(self.cut, self.model)

    @property
    def head(self) -> str:
        """The auxiliary head to build: ``aux-head``, or the strategy's default if it is empty.

        FSL-SAGE's estimator is the reference's ``resnet-stage``; every other strategy with a
        head defaults to the small ``pooled`` head.
        """
        return self.aux_head or ("resnet-stage" if self.strategy == "fsl-sage" else "pooled")

    @property
    def data_options(self) -> DataOptions:
        """The keys that shape how ``imagefolder`` and ``hf:`` images are read."""
        return DataOptions(self.image_size, self.test_fraction, self.image_column, self.label_column)

    @property
    def num_classes(self) -> int:
        """Number of classes of the configured dataset (read from the data where it says so)."""
        return describe_dataset(self.dataset, self.data_dir, self.seed, self.data_options)[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the configured dataset's images: the network's input."""
        return describe_dataset(self.dataset, self.data_dir, self.seed, self.data_options)[1]

    def as_run_config(self) -> dict[str, Any]:
        """The config as kebab-case keys, as written to ``config.json``."""
        return self.model_dump(by_alias=True)


def parse_run_config(
    raw: Mapping[str, Any], strategies: Iterable[str] | None = None
) -> RunConfig:
    """Validate a Flower run config; raise one ``ConfigError`` that lists every bad key."""
    context = {"strategies": set(strategies)} if strategies is not None else None
    try:
        return RunConfig.model_validate(dict(raw), context=context)
    except ValidationError as err:
        lines = []
        for problem in err.errors():
            key = ".".join(str(part) for part in problem["loc"]) or "(config)"
            message = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "extra_forbidden":
                message = f"unknown key; valid keys are {sorted(_valid_keys())}"
            elif "input" in problem and not isinstance(problem["input"], dict):
                message = f"{message} (got {problem['input']!r})"
            lines.append(f"  - {key}: {message}")
        raise ConfigError("invalid run config:\n" + "\n".join(lines)) from None


def _valid_keys() -> list[str]:
    return [_kebab(name) for name in RunConfig.model_fields]


__all__ = ["ConfigError", "RunConfig", "parse_run_config"]
