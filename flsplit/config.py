"""The one place where run-config keys are defined and validated.

Keys are kebab-case, as in ``[tool.flwr.app.config]``. Validation runs before any training,
and every bad key is reported in one message that names the key and what it accepts. Types are
strict, as TOML's are: a boolean is not a number, a number is not a boolean or a string; an
integer is a valid float (``lr = 1``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from flsplit.aggregation import check_aggregation
from flsplit.data import BUILT_IN, HF_PREFIX, DataOptions, describe_dataset
from flsplit.device import check_amp, check_device
from flsplit.models import get_builder, head_names, resolve_cut


class ConfigError(ValueError):
    """Raised when the run config has bad keys or values; the message lists all of them."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class RunConfig(BaseModel):
    """Validated run configuration (see the settings table in docs/settings.md)."""

    model_config = ConfigDict(
        alias_generator=_kebab, extra="forbid", frozen=True, protected_namespaces=(), strict=True
    )

    strategy: str = "dsl"
    #: A plug-in's own keys as TOML (``"clip-norm = 0.5"``), so a plug-in needs no declared key.
    strategy_config: str = ""
    model: str = "resnet20"
    cut: str = "s"
    #: Per-node cuts in simulation, by partition id ("s,s,m,d"); an empty or missing entry is ``cut``.
    cuts: str = ""
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
    lr_warmup: int = Field(0, ge=0)  # rounds of linear warm-up before lr-schedule starts (flsplit.optim)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    aggregate_clients: bool = False  # the old spelling of client-sync = "average"
    client_sync: Literal["", "none", "relay", "average"] = ""  # empty: the strategy's own (SplitStrategy.sync_of)
    seed: int = Field(0, ge=0)
    partition_seed: int = Field(-1, ge=-1)  # seeds the partition; -1: seed (as every run before this key)
    results_dir: str = ""  # relative: under $FLSPLIT_RESULTS_DIR or ~/flsplit-results (flsplit.results)
    run_name: str = ""
    max_batches: int = Field(40, ge=0)  # 0: every batch of the partition, local-epochs times
    eval_samples: int = Field(2000, ge=0)  # 0: the whole test split
    eval_every: int = Field(1, ge=1)  # score the test split after every N-th round; the last always
    chunk_mb: float = Field(64.0, gt=0)
    min_clients: int = Field(1, ge=1)
    message_timeout: float = Field(600.0, gt=0)
    resume: bool = False
    #: Simulated slow devices, by partition id ("1,1,2,4"): each client's compute takes that many
    #: times as long (flsplit.slowdown); an empty or missing entry is 1.
    slowdowns: str = ""
    #: Asynchronous rounds (DSL, and plug-ins that opt in; apps.async_rounds): the server trains
    #: on uploads in the order they arrive, and a round closes on a quorum of finished clients or a deadline.
    asynchronous: bool = False
    quorum: int = Field(0, ge=0)  # clients that must finish their epoch to close an asynchronous round; 0: every live client
    round_deadline: float = Field(0.0, ge=0, allow_inf_nan=False)  # seconds (virtual units under virtual-clock) from a round's start; 0: none
    max_staleness: int = Field(0, ge=0)  # batches a client may run ahead of the slowest one still training; 0: no bound
    virtual_clock: bool = False  # arrival order from the declared slowdowns, not from wall time (reproducible)
    keep_rounds: str = ""  # "1,5,10" or "all": rounds whose checkpoints are never pruned (flsplit leak)
    tensorboard: bool = False
    progress: Literal["auto", "on", "off"] = "auto"  # lines inside a round (flsplit.progress)
    wire_dtype: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    eval_wire_dtype: Literal["", "fp32", "fp16", "bf16", "int8"] = ""  # empty: wire-dtype
    memory_probe: int = Field(3, ge=0)
    client_cache: int = Field(8, ge=0)
    aggregation: str = "FedAvg"
    serve_order: Literal["", "sequential", "shuffled", "interleaved"] = ""  # empty: the strategy's own order
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps (flsplit.device)
    server_device: str = ""  # the ServerApp's device; empty: device
    amp: Literal["off", "bf16", "fp16"] = "off"  # autocast of the forward passes
    deterministic: bool = False  # deterministic kernels (cuDNN, cuBLAS)
    transport: Literal["messages", "stream"] = "messages"  # how a round's per-batch tensors travel
    stream_listen: str = ""  # host:port the ServerApp's data plane binds; empty: 127.0.0.1:0 (simulation), 0.0.0.0:0
    stream_advertise: str = ""  # host:port clients dial; empty: the bound address
    stream_tls: Literal["auto", "on", "off"] = "auto"  # auto: TLS on SuperNodes, plain TCP on simulation's loopback
    max_frame_mb: float = Field(256.0, gt=0)  # the largest data-plane frame either side accepts
    stream_handshake_timeout: float = Field(60.0, gt=0)  # seconds for a client to dial in and present its ticket
    # Privacy defences on what a client uploads (flsplit.privacy.defences; docs/privacy.md).
    activation_noise: float = Field(0.0, ge=0, allow_inf_nan=False)  # σ: Gaussian noise of σ·std(z) on uploaded activations
    nopeek_weight: float = Field(0.0, ge=0, allow_inf_nan=False)  # α: weight of NoPeek's dCor(x, z) in the client's loss
    label_dp: Literal["off", "rr"] = "off"  # rr: uploaded labels by k-ary randomised response
    label_dp_epsilon: float = Field(1.0, allow_inf_nan=False)  # ε of label-dp (> 0)
    gradient_noise: float = Field(0.0, ge=0, allow_inf_nan=False)  # σ: Gaussian noise of σ·std(g) on uploaded gradients (U-shaped dL/dz2)
    #: The strategy's own settings (``SplitStrategy.params``), validated from its keys.
    params: Any = Field(default=None, exclude=True)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        known = context.get("strategies")
        if known is not None and value not in known and "." not in value:
            raise ValueError(f"unknown strategy '{value}'; choose one of {sorted(known)}")
        if context.get("strategy_error"):  # a dotted path that does not name a usable strategy
            raise ValueError(context["strategy_error"])
        return value

    @field_validator("label_dp_epsilon")
    @classmethod
    def _positive_epsilon(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(
                "must be > 0 (smaller keeps fewer true labels); to send the true labels set label-dp = \"off\""
            )
        return value

    @field_validator("aggregation")
    @classmethod
    def _known_aggregation(cls, value: str) -> str:
        return check_aggregation(value)  # raises ValueError naming the supported strategies

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device(value)

    @field_validator("server_device")
    @classmethod
    def _known_server_device(cls, value: str) -> str:
        return check_device(value) if value else value

    @field_validator("amp")
    @classmethod
    def _amp_fits_the_devices(cls, value: str, info: ValidationInfo) -> str:
        device = info.data.get("device")
        if device is not None and device != "auto":
            check_amp(value, device, "device")
        server = info.data.get("server_device")
        if server and server != "auto":
            check_amp(value, server, "server-device")
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

    @field_validator("cuts")
    @classmethod
    def _valid_cuts(cls, value: str, info: ValidationInfo) -> str:
        model = info.data.get("model")
        for index, cut in enumerate(_entries(value)):
            if cut and model is not None:
                try:
                    resolve_cut(cut, model)
                except ValueError as err:
                    raise ValueError(f"entry {index} (partition {index}): {str(err).removeprefix('cut: ')}") from None
        return value

    @field_validator("slowdowns")
    @classmethod
    def _valid_slowdowns(cls, value: str) -> str:
        for index, entry in enumerate(_entries(value)):
            if entry:
                try:
                    slowdown_factor(entry)
                except ValueError as err:
                    raise ValueError(f"entry {index} (partition {index}): {err}") from None
        return value

    @field_validator("keep_rounds")
    @classmethod
    def _round_list(cls, value: str) -> str:
        if value.strip() in ("", "all"):
            return value.strip()
        parts = [part.strip() for part in value.split(",")]
        if not all(part.isdigit() and int(part) >= 1 for part in parts):
            raise ValueError(f'expected round numbers separated by commas, such as "1,5,10", or "all" (got {value!r})')
        return ",".join(str(n) for n in sorted({int(part) for part in parts}))

    @model_validator(mode="after")
    def _sync_fits_the_order(self) -> RunConfig:
        if self.aggregate_clients and self.client_sync in ("none", "relay"):
            raise ValueError(
                f"aggregate-clients = true means client-sync = \"average\", but client-sync is \"{self.client_sync}\"; "
                "drop aggregate-clients (the old spelling) and set client-sync alone"
            )
        self._check_asynchrony()
        if self.client_sync == "relay" and self.serve_order == "interleaved":
            raise ValueError(
                'client-sync = "relay" hands one slice from client to client, so it needs sequential serving: '
                'set serve-order to "sequential" or "shuffled" (or leave it empty)'
            )
        return self

    def _check_asynchrony(self) -> None:
        """The asynchronous keys shape an asynchronous round only, and it serves every client at once."""
        shaping = {"quorum": self.quorum, "round-deadline": self.round_deadline, "max-staleness": self.max_staleness, "virtual-clock": self.virtual_clock}
        set_alone = [key for key, value in shaping.items() if value]
        if set_alone and not self.asynchronous:
            raise ValueError(f"{', '.join(set_alone)}: shape an asynchronous round only; set asynchronous = true, or leave them at their defaults")
        if self.asynchronous and self.serve_order in ("sequential", "shuffled"):
            raise ValueError(
                f'asynchronous = true serves every client at once, in arrival order, but serve-order is "{self.serve_order}"; '
                'leave serve-order empty (or "interleaved"), or set asynchronous = false'
            )
        if self.asynchronous and self.client_sync == "relay":
            raise ValueError('asynchronous = true cannot relay one slice from client to client (client-sync = "relay"); use "none" or "average"')

    @property
    def data_seed(self) -> int:
        """What seeds the partition: ``partition-seed``, or ``seed`` when it is -1."""
        return self.seed if self.partition_seed < 0 else self.partition_seed

    @property
    def server_device_name(self) -> str:
        """The device the ServerApp resolves: ``server-device``, or ``device`` when it is empty."""
        return self.server_device or self.device

    @property
    def eval_wire(self) -> str:
        """How test-split activations travel: ``eval-wire-dtype``, or ``wire-dtype`` when it is empty."""
        return self.eval_wire_dtype or self.wire_dtype

    def scores_round(self, round_number: int) -> bool:
        """Whether the test split is scored after ``round_number``: every ``eval-every``-th round and
        always the last, so a run's final accuracy is measured whatever the interval."""
        return round_number % self.eval_every == 0 or round_number == self.num_server_rounds

    def keeps_round(self, round_number: int) -> bool:
        """Whether ``keep-rounds`` keeps the checkpoints of ``round_number`` for the privacy attacks."""
        if self.keep_rounds == "all":
            return True
        return bool(self.keep_rounds) and round_number in {int(n) for n in self.keep_rounds.split(",")}

    @property
    def cut_blocks(self) -> int:
        """The cut as a number of residual blocks kept on the client."""
        return resolve_cut(self.cut, self.model)

    def cut_of(self, partition_id: int) -> str:
        """The cut ``cuts`` gives partition ``partition_id`` in simulation, else the run's ``cut``."""
        return _entry_of(self.cuts, partition_id) or self.cut

    def slowdown_of(self, partition_id: int) -> float:
        """The compute slowdown ``slowdowns`` gives partition ``partition_id`` (1: full speed)."""
        return float(_entry_of(self.slowdowns, partition_id) or 1.0)

    @property
    def declared_cut_blocks(self) -> set[int]:
        """The cuts the run config declares (``cut`` and every ``cuts`` entry), in blocks."""
        return {resolve_cut(cut, self.model) for cut in [self.cut, *filter(None, _entries(self.cuts))]}

    @property
    def shallowest_cut_blocks(self) -> int:
        """The shallowest declared cut: where the server's slice starts (a node may name a deeper one)."""
        return min(self.declared_cut_blocks)

    def with_cut(self, cut: str, source: str = "cut") -> RunConfig:
        """This config with another ``cut`` (a node's own), checked; a bad one is a ``ConfigError`` naming ``source``."""
        try:
            resolve_cut(cut, self.model)
        except ValueError as err:
            raise ConfigError(f"invalid run config:\n  - {source}: {str(err).removeprefix('cut: ')}") from None
        return self if cut == self.cut else self.model_copy(update={"cut": cut})

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
        """The config as kebab-case keys (the strategy's own included), as written to ``config.json``."""
        own = self.params.model_dump(by_alias=True) if self.params is not None else {}
        return self.model_dump(by_alias=True) | own


def _entries(mapping: str) -> list[str]:
    """The comma-separated entries of a per-partition key, stripped (``"s,,m"``: ``["s", "", "m"]``)."""
    return [entry.strip() for entry in mapping.split(",")] if mapping.strip() else []


def _entry_of(mapping: str, partition_id: int) -> str:
    """Partition ``partition_id``'s entry of a per-partition key; empty when it names none."""
    entries = _entries(mapping)
    return entries[partition_id] if partition_id < len(entries) else ""


def slowdown_factor(value: object) -> float:
    """``value`` as a slowdown factor (finite, >= 1); a ``ValueError`` saying what it accepts otherwise."""
    try:
        factor = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        factor = float("nan")
    if not 1.0 <= factor < float("inf"):
        raise ValueError(f"{value!r} is not a factor >= 1 (1: full speed; \"1,1,2,4\": partition 3 computes 4x as long)")
    return factor


class StrategyParams(BaseModel):
    """A strategy's own settings: subclass, declare fields, and set ``SplitStrategy.params``.

    Each field is a run-config key, named as the field in kebab-case (``noise_scale`` is
    ``noise-scale``); prefix a plug-in's fields with its name so they cannot collide with
    another strategy's. They are validated with the rest of the run config, in the same
    one-error-for-every-bad-key report, and a strategy reads them as ``config.params``.
    """

    model_config = ConfigDict(alias_generator=_kebab, extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @classmethod
    def keys(cls) -> set[str]:
        """The run-config keys these settings are read from."""
        return {_kebab(name) for name in cls.model_fields}


def parse_run_config(
    raw: Mapping[str, Any],
    strategies: Mapping[str, type[StrategyParams] | None] | Iterable[str] | None = None,
    declared: Iterable[str] = (),
    strategy_error: str = "",
) -> RunConfig:
    """Validate a Flower run config; raise one ``ConfigError`` that lists every bad key.

    ``strategies`` names the known strategies, or maps each to its settings
    (``StrategyParams``). The selected strategy's keys are validated into ``config.params``,
    from their own keys or from ``strategy-config``, which overrides them; keys of the other
    strategies are accepted unread (``pyproject.toml`` sets them all for ``flwr run``), and so
    are the ``declared`` keys that nothing here reads: in a Flower app, the keys its
    ``pyproject.toml`` declares for a plug-in that is not the one running. ``strategy_error``
    says why the selected strategy's dotted path names no strategy; it joins the report.
    """
    models = {name: model for name, model in strategies.items() if model} if isinstance(strategies, Mapping) else {}
    context = {"strategies": set(strategies), "strategy_error": strategy_error} if strategies is not None else None
    owned = {key for model in models.values() for key in model.keys()}
    unread = set(declared) - run_config_keys() - owned
    raw = {k: v for k, v in raw.items() if k not in unread}
    problems = ["  - params: unknown key; a strategy's settings are keys of their own"] if "params" in raw else []
    config = _validate(RunConfig, {k: v for k, v in raw.items() if k not in owned}, context, problems, owned)
    name = str(raw.get("strategy", RunConfig.model_fields["strategy"].default))
    chosen = models.get(name)
    own = {k: v for k, v in raw.items() if chosen and k in chosen.keys()}
    if not strategy_error:  # a strategy that cannot be imported has no keys to check against
        own |= _strategy_config(raw.get("strategy-config", ""), name, chosen, problems)
    params = _validate(chosen, own, None, problems, owned) if chosen else None
    if problems:
        raise ConfigError("invalid run config:\n" + "\n".join(problems))
    assert config is not None
    return config.model_copy(update={"params": params})


def _strategy_config(text: Any, strategy: str, model: type[StrategyParams] | None, problems: list[str]) -> dict[str, Any]:
    """The keys in ``strategy-config`` (TOML: ``"a = 1"``, or an inline table ``"{a = 1, b = 2}"``).

    Each must be one of the selected strategy's own keys; a shared key (``lr``) is set as itself.
    """
    if not isinstance(text, str) or not text.strip():
        return {}  # a non-string is reported by RunConfig's own check
    try:
        table = tomllib.loads(f"table = {text}" if text.strip().startswith("{") else text)
        table = table["table"] if text.strip().startswith("{") else table
    except tomllib.TOMLDecodeError as err:
        problems.append(
            f"  - strategy-config: not TOML ({err}) (got {text!r}); write e.g. 'clip-norm = 0.5' "
            "or '{clip-norm = 0.5, clip-every = 2}'"
        )
        return {}
    valid = sorted(model.keys()) if model else []
    for key in sorted(set(table) - set(valid)):
        where = "a shared key: set it as its own run-config key" if key in run_config_keys() else f"the keys of '{strategy}' are {valid}"
        problems.append(f"  - strategy-config: unknown key '{key}'; {where}")
    return {k: v for k, v in table.items() if k in valid}


def _validate(model: type[BaseModel], raw: dict[str, Any], context: dict | None, problems: list[str], owned: set[str]) -> Any:
    """``model`` validated from ``raw``, or ``None`` with a line per bad key added to ``problems``."""
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as err:
        for problem in err.errors():
            key = ".".join(str(part) for part in problem["loc"])
            message = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "extra_forbidden":
                message = f"unknown key; valid keys are {sorted(run_config_keys() | owned)}"
            elif "input" in problem and not isinstance(problem["input"], dict):
                message = f"expected {_EXPECTED[problem['type']]}" if problem["type"] in _EXPECTED else message
                message = f"{message} (got {_as_toml(problem['input'])})"
            problems.append(f"  - {key}: {message}" if key else f"  - {message}")  # a whole-model check names its keys
        return None


#: What a key of each type accepts, in TOML's words (a type error's message).
_EXPECTED = {
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
}


def _as_toml(value: Any) -> str:
    """``value`` as a user wrote it in ``--run-config`` (``true``, not Python's ``True``)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def run_config_keys() -> set[str]:
    """The run-config keys of ``RunConfig`` (kebab-case), without any strategy's own."""
    return {_kebab(name) for name, field in RunConfig.model_fields.items() if not field.exclude}


__all__ = ["ConfigError", "RunConfig", "StrategyParams", "parse_run_config", "run_config_keys"]
