"""Settings: each step's `params.yaml` section is one frozen dataclass.

One mechanism for every `cfxray` command (and so for the DVC stages and KFP steps that call
them): `load_params` reads the file, `from_section` turns a section into its dataclass,
`add_settings` gives a command one `--kebab-case` option per field and `resolve` puts the
options given on the command line over the file. The dataclass defaults equal the committed
params.yaml (tests/test_settings.py compares them), so a command behaves the same outside the
repository. Every problem (invalid YAML, a named file that is missing, an unknown key, a value
of the wrong type) is a one-line `UserError` raised before the command does any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from cfxray.errors import UserError

DEFAULT_PARAMS = Path("params.yaml")
T = TypeVar("T")


# --- the file ------------------------------------------------------------------------------------


def params_label(path: str | Path | None) -> str:
    """How errors name the params file."""
    return str(DEFAULT_PARAMS if path is None else path)


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """The whole params file. None means ./params.yaml when there is one (else every default
    applies, so commands work outside the repository); a file named explicitly must exist."""
    file = DEFAULT_PARAMS if path is None else Path(path)
    if not file.exists():
        if path is None:
            return {}
        raise UserError(f"params file {file} not found")
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(f"params file {file}: {reason}") from None
    return parse_params(text, str(file))


def parse_params(text: str, label: str) -> dict[str, Any]:
    """Params YAML text as a mapping of sections (empty text: none)."""
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{label}: invalid YAML{where}: {problem}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{label}: expected a mapping of sections, got {_kind(values)}")
    return values


def read_section(params: Mapping[str, Any], name: str, label: str = "params.yaml"
                 ) -> dict[str, Any]:
    """One section's keys ({} when absent or empty)."""
    values = params.get(name)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{label} {name}: expected a mapping of keys to values, "
                        f"got {_kind(values)}")
    return dict(values)


# --- sections as dataclasses ----------------------------------------------------------------------


def from_section(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """`values` as a `cls`: unknown keys and values of the wrong type are refused; `where`
    (e.g. "params.yaml train_classifier") starts every message."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in values if k not in known]
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        raise UserError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {listed}; "
                        f"known: {', '.join(sorted(known))}")
    return cls(**{k: convert(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def load_settings(cls: type[T], name: str, path: str | Path | None = None) -> T:
    """Section `name` of the params file at `path` (see `load_params`) as a `cls`."""
    label = params_label(path)
    return from_section(cls, read_section(load_params(path), name, label), f"{label} {name}")


def from_sections(params: Mapping[str, Any], sections: Mapping[str, type],
                  label: str = "params.yaml") -> dict[str, Any]:
    """Several sections of one params mapping, each as its dataclass: all checked at once."""
    return {name: from_section(cls, read_section(params, name, label), f"{label} {name}")
            for name, cls in sections.items()}


def convert(value: Any, hint: Any, where: str) -> Any:
    """`value` (from YAML or the command line) as type `hint`, or a one-line error.

    Numbers given as strings are parsed, since YAML 1.1 reads `1e-3` as a string."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"{where}: unsupported settings type {hint}")
        return convert(value, options[0], where)
    if value is None:
        raise UserError(f"{where}: expected {describe(hint)}, got null")
    if origin is Literal:
        if value in args:
            return value
        raise UserError(f"{where}: expected one of {', '.join(map(str, args))}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: expected a mapping of keys to values, got {value!r}")
        return from_section(hint, value, where)  # type: ignore[arg-type]
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise UserError(f"{where}: expected a list, got {value!r}")
        items = [convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint in _SCALARS:
        return _SCALARS[hint](value, where)
    raise TypeError(f"{where}: unsupported settings type {hint}")


def describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None)) + " or null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (tuple, list):
        return "a list"
    if dataclasses.is_dataclass(hint):
        return "a mapping of keys to values"
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a string"}.get(hint, str(hint))


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise UserError(f"{where}: expected true or false, got {value!r}")


def _int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise UserError(f"{where}: expected an integer, got {value!r}")


def _float(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise UserError(f"{where}: expected a number, got {value!r}")


def _str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # e.g. a git revision YAML read as a number
    raise UserError(f"{where}: expected a string, got {value!r}")


_SCALARS: dict[type, Callable[[Any, str], Any]] = {bool: _bool, int: _int, float: _float,
                                                    str: _str}


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string"}.get(type(value), repr(value))


# --- the command line ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Options:
    """What `add_settings` registered on one parser, for its --help."""

    cls: type
    section: str
    actions: dict[str, argparse.Action]
    texts: dict[str, str]


def add_params_option(parser: argparse.ArgumentParser, section: str | None = None) -> None:
    """`--params FILE`, and `--section NAME` (default `section`) when a command can read more
    than one section into the same dataclass."""
    parser.add_argument("--params", type=Path, default=None, metavar="FILE",
                        help="parameters file (default: params.yaml when there is one; a file "
                             "named here must exist)")
    if section is not None:
        parser.add_argument("--section", default=section,
                            help=f"params.yaml section to read (default: {section})")


def add_settings(parser: argparse.ArgumentParser, cls: type, section: str, *,
                 only: Sequence[str] | None = None, help: Mapping[str, str] | None = None,
                 choose_section: bool = False) -> None:
    """`--params` (and `--section` with `choose_section`) plus one `--kebab-case` option per
    field of `cls` (those in `only`, when given): defaults None so that an option left out
    keeps the file's value; `help` adds a text to an option's help line, and `--help` shows
    the value a run would use."""
    add_params_option(parser, section if choose_section else None)
    group = parser.add_argument_group(
        f"settings (params.yaml section {'--section' if choose_section else repr(section)}; "
        "an option given here wins)")
    hints = typing.get_type_hints(cls)
    texts = dict(help or {})
    actions = {}
    for field in dataclasses.fields(cls):
        if only is not None and field.name not in only:
            continue
        text = (f"{texts.get(field.name, '')} (default: the params file's, else "
                f"{field.default!r})").strip().replace("%", "%%")
        actions[field.name] = _add_option(group, field.name, hints[field.name], text)
    parser.settings_options = _Options(cls, section, actions, texts)  # type: ignore[attr-defined]


def _add_option(group: argparse._ArgumentGroup, name: str, hint: Any,
                text: str) -> argparse.Action:
    flag = "--" + name.replace("_", "-")
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(options) == 1:
        hint = options[0]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    where = f"argument {flag}"
    if hint is bool:
        return group.add_argument(flag, dest=name, default=None, help=text,
                                  action=argparse.BooleanOptionalAction)
    if origin is Literal:
        return group.add_argument(flag, dest=name, default=None, help=text, choices=args)
    if origin in (tuple, list):
        def items(value: str) -> list[Any]:
            return [convert(v.strip(), args[0], where) for v in value.split(",") if v.strip()]
        return group.add_argument(flag, dest=name, default=None, help=text, metavar="A,B",
                                  type=_argparse_type(items))
    return group.add_argument(flag, dest=name, default=None, help=text, metavar=name.upper(),
                              type=_argparse_type(lambda v: convert(v, hint, where)))


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse reports a ValueError as `invalid value`; ours says what was expected."""
    def parse_or_error(value: str) -> Any:
        try:
            return parse(value)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    return parse_or_error


def resolve(cls: type[T], args: argparse.Namespace, section: str | None = None) -> T:
    """The params file's section (`section`, else `args.section`) with the options given on
    the command line over it; the options must have been added with `add_settings`."""
    name = section or args.section
    label = params_label(args.params)
    values = read_section(load_params(args.params), name, label)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    return from_section(cls, values, f"{label} {name}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose `--help` shows each settings option's default as the value a
    run would use: the params file's (the one `--params` names, else ./params.yaml) when it
    has one, else the dataclass's."""

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        options: _Options | None = getattr(self, "settings_options", None)
        if options is not None and ("-h" in args or "--help" in args):
            _describe_defaults(options, args)
        return super().parse_known_args(args, namespace)


def _describe_defaults(options: _Options, args: list[str]) -> None:
    scan = argparse.ArgumentParser(add_help=False)
    scan.add_argument("--params", default=None)
    scan.add_argument("--section", default=options.section)
    given, _ = scan.parse_known_args(args)
    label = params_label(given.params)
    try:
        values = read_section(load_params(given.params), given.section, label)
        problem = ""
    except UserError as exc:
        values, problem = {}, f"; {label} unusable: {exc}"
    defaults = options.cls()
    for name, action in options.actions.items():
        if name in values:
            shown = f"{values[name]!r} from {label} {given.section}"
        else:
            shown = f"{getattr(defaults, name)!r}{problem}"
        text = options.texts.get(name, "")
        action.help = f"{text} (default: {shown})".strip().replace("%", "%%")
