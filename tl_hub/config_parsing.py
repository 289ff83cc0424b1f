"""How recipe values are read: command-line overrides, YAML files, keys (with did-you-mean and the
names other tools use), values coerced by a field's type, and the guard that keeps tokens out.

`tl_hub.config.RecipeConfig` uses these; nothing here knows its fields (they are passed in).

Example:
    >>> split_overrides(["--epochs", "3", "--lr_scheduler=linear", "seed=1", "--push_to_hub"])
    [('epochs', '3'), ('lr_scheduler', 'linear'), ('seed', '1'), ('push_to_hub', 'true')]
    >>> coerce("epochs", "3", int), coerce("labels", "cat,dog", list[str])
    (3, ['cat', 'dog'])
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from tl_hub.errors import ConfigError

__all__ = ["TOKEN_HELP", "closest", "coerce", "looks_like_token", "normalise_key", "normalise_keys", "read_yaml",
           "show", "split_overrides", "type_name"]

# Keys people bring from other tools: a hint in the "unknown key" error (never silently accepted).
_RENAMED = {
    "model_name_or_path": "model",
    "model_name": "model",
    "model_revision": "revision",
    "dataset_name": "dataset",
    "dataset_config_name": "dataset_config",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "lr": "learning_rate",
    "warmup": "warmup_ratio",
    "lr_scheduler_type": "lr_scheduler",
    "report_to": "log_with",
    "with_tracking": "log_with",
    "private": "hub_private",
    "fp16": "mixed_precision",
    "bf16": "mixed_precision",
    "max_eval_samples": "max_train_samples",
    "remove_unused_columns": None,
}
_SECRET_KEYS = {"token", "hub_token", "hf_token", "use_auth_token", "auth_token", "access_token", "api_key"}
_TOKEN_VALUE = re.compile(r"^hf_[A-Za-z0-9]{20,}$")
_NULL_STRINGS = {"none", "null", "~", ""}
_TRUE_STRINGS = {"true", "yes", "1", "on", "y"}
_FALSE_STRINGS = {"false", "no", "0", "off", "n"}

TOKEN_HELP = (
    " (recipes are saved next to the model and pushed). tl_hub reads the token from the HF_TOKEN "
    "environment variable or from the login of `hf auth login`."
)


def looks_like_token(value: Any) -> bool:
    """True for a string shaped like a Hugging Face access token (`hf_` + 20 or more letters/digits).

    Example:
        >>> looks_like_token("hf_" + "a" * 30), looks_like_token("my_model")
        (True, False)
    """
    return isinstance(value, str) and bool(_TOKEN_VALUE.match(value))


def closest(key: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest of `choices`, or "" when none is close.

    Example:
        >>> closest("epocs", ["epochs", "seed"])
        " (did you mean 'epochs'?)"
    """
    match = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


# ---------------------------------------------------------------------------------------------
# command-line overrides and keys


def split_overrides(argv: Iterable[str]) -> list[tuple[str, str]]:
    """`--key value`, `--key=value`, `key=value` and bare `--flag` (= "true") into (raw key, raw value) pairs.

    A value is taken from the next argument unless that starts with `--`. Keys are not checked here.
    """
    args = [str(a) for a in argv]
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            body = arg[2:]
            if "=" in body:
                key, value = body.split("=", 1)
                i += 1
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                key, value = body, args[i + 1]
                i += 2
            else:
                key, value = body, "true"
                i += 1
        elif "=" in arg and not arg.startswith("-"):
            key, value = arg.split("=", 1)
            i += 1
        else:
            raise ConfigError(
                f"unexpected argument {arg!r}: overrides look like --key value, --key=value or key=value "
                "(e.g. --epochs 3)"
            )
        if not key:
            raise ConfigError(f"argument {arg!r} has an empty key; write --key value")
        out.append((key, value))
    return out


def normalise_key(raw: Any, valid: Sequence[str]) -> str:
    """The field name a key means (`--batch-size` -> `batch_size`); an unknown key raises ConfigError with
    the closest valid key, or the name tl_hub uses for another tool's option; a token key is refused.

    Example:
        >>> normalise_key("--batch-size", ["batch_size"])
        'batch_size'
    """
    if not isinstance(raw, str):
        raise ConfigError(f"recipe keys must be strings, got {raw!r} ({type(raw).__name__})")
    key = raw.strip().lstrip("-").replace("-", "_")
    if key in valid:
        return key
    if key.lower() in _SECRET_KEYS:
        raise ConfigError(f"{raw!r}: tokens are never part of a recipe{TOKEN_HELP}")
    if key in _RENAMED:
        hint = f" (tl_hub calls it {_RENAMED[key]!r})" if _RENAMED[key] else " (tl_hub has no such option)"
    else:
        hint = closest(key, valid)
    raise ConfigError(f"unknown key {raw!r}{hint}. Valid keys: {', '.join(valid)}")


def normalise_keys(values: Mapping[str, Any], valid: Sequence[str]) -> dict[str, Any]:
    """`normalise_key` on every key of a mapping; two spellings of one key are an error."""
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = normalise_key(raw_key, valid)
        if key in out:
            raise ConfigError(f"{key}: given twice (as {raw_key!r} and another spelling); keep one")
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# types


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def type_name(tp: Any) -> str:
    """A field type as --help shows it: INT, FLOAT|null, {cosine,linear,constant}, LIST.

    Example:
        >>> type_name(int | None)
        'INT|null'
    """
    if _is_union(tp):
        parts = [type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        optional = type(None) in typing.get_args(tp)
        return "|".join(parts) + ("|null" if optional else "")
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if typing.get_origin(tp) is list:
        return "LIST"
    if typing.get_origin(tp) is dict:
        return "MAPPING"
    return {int: "INT", float: "FLOAT", bool: "BOOL", str: "STR"}.get(tp, str(tp))


def show(value: Any) -> str:
    """A value as YAML would write it (null, true/false, [a, b]).

    Example:
        >>> show(None), show(True), show(["a", "b"])
        ('null', 'true', '[a, b]')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert `value` to the field type `tp` (strings are parsed by the type), or raise ConfigError.

    Example:
        >>> coerce("push_to_hub", "yes", bool), coerce("seed", "1e3", int), coerce("eval_batch_size", "null", int | None)
        (True, 1000, None)
    """
    if _is_union(tp):
        return _coerce_union(key, value, tp)
    if value is None:
        raise ConfigError(f"{key}: may not be null; expected {type_name(tp)}")
    origin = typing.get_origin(tp)
    if origin is Literal:
        return _coerce_literal(key, value, typing.get_args(tp))
    if origin is list:
        return _coerce_list(key, value)
    if origin is dict:
        return _coerce_mapping(key, value)
    coercer = _SCALARS.get(tp)
    if coercer is None:  # pragma: no cover - guards new field types
        raise ConfigError(f"{key}: unsupported field type {tp!r}")
    return coercer(key, value)


def _coerce_union(key: str, value: Any, tp: Any) -> Any:
    args = typing.get_args(tp)
    optional = type(None) in args
    # a string of spaces or a tab is a value (a label separator), not an empty cell: only "" and the null words are null
    if value is None or (optional and isinstance(value, str) and (value == "" or (value.strip() and
                                                                              value.strip().lower() in _NULL_STRINGS))):
        if optional:
            return None
        raise ConfigError(f"{key}: may not be null; expected {type_name(tp)}")
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(key, value, arg)
        except ConfigError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    choices = [str(c) for a in args if typing.get_origin(a) is Literal for c in typing.get_args(a)]
    hint = closest(value.strip().lower(), choices) if isinstance(value, str) and choices else ""
    raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r} ({type(value).__name__}){hint}")


def _coerce_literal(key: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if isinstance(value, bool) and "no" in choices and value is False:
        return "no"  # YAML 1.1 reads a bare `no` as false
    text = str(value).strip().lower() if isinstance(value, str) else value
    if text in choices:
        return text
    raise ConfigError(
        f"{key}: got {value!r}; choose one of {', '.join(map(str, choices))}"
        + (closest(str(text), [str(c) for c in choices]) if isinstance(text, str) else "")
    )


def _coerce_mapping(key: str, value: Any) -> dict[str, Any]:
    """A mapping, or its YAML text (`{cat: 2, dog: 1}`), as {str key: value}; the values are checked by the
    key's own rule (e.g. tl_hub.imbalance.check_class_weights)."""
    if isinstance(value, str) and value.strip().startswith("{"):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: could not parse {value!r} as a mapping: {err}") from err
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping {{name: value}}, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _coerce_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import yaml

            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ConfigError(f"{key}: could not parse {text!r} as a list: {err}") from err
        elif text.lower() in _NULL_STRINGS:
            value = []
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list (YAML [a, b] or a,b on the command line), got {value!r}")
    items = []
    for item in value:
        if isinstance(item, bool) or item is None or isinstance(item, (list, dict)):
            raise ConfigError(f"{key}: list items must be strings, got {item!r} in {value!r}")
        items.append(str(item))
    return items


def _coerce_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_STRINGS | _FALSE_STRINGS:
        return value.strip().lower() in _TRUE_STRINGS
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{key}: expected true or false (yes/no, 1/0), got {value!r}")


def _coerce_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r} (a boolean)")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                as_float = float(value.strip())
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
    raise ConfigError(f"{key}: expected an integer, got {value!r} ({type(value).__name__})")


def _coerce_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r} (a boolean)")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected a number (e.g. 1e-4), got {value!r} ({type(value).__name__})")


def _coerce_str(key: str, value: Any) -> str:
    if isinstance(value, (bool, list, dict)):
        raise ConfigError(f"{key}: expected a string, got {value!r} ({type(value).__name__})")
    if isinstance(value, (int, float, Path)):
        return str(value)
    if isinstance(value, str):
        return value
    raise ConfigError(f"{key}: expected a string, got {value!r} ({type(value).__name__})")


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


# ---------------------------------------------------------------------------------------------
# YAML


def read_yaml(path: Path) -> dict[str, Any]:
    """A recipe file as a dict: safe YAML, a duplicated key is an error naming its line (PyYAML keeps the
    last one silently), a missing file or a non-mapping a clear ConfigError."""
    import yaml

    class _StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"{path}: key {key!r} appears twice (line {key_node.start_mark.line + 1}); keep one"
                )
            seen[key] = loader.construct_object(value_node, deep=deep)
        return seen

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    if not path.is_file():
        raise ConfigError(f"config: recipe file {str(path)!r} not found (see recipes/configs/ for examples)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must be a mapping of key: value, got a {type(data).__name__}")
    return data
