"""Values and command-line words for params fields, for the tests of the CLI options."""

import dataclasses


def other_value(f: dataclasses.Field, kind: type):
    """A valid value of field `f` that differs from its default."""
    if f.name == "device":
        return "cpu"
    default = f.default
    meta = f.metadata
    if meta.get("choices"):
        return next(c for c in meta["choices"] if c != default)
    if kind is bool:
        return not default
    if kind is int:
        value = default + 1
        return value if meta.get("high") is None or value <= meta["high"] else default - 1
    if kind is float:
        value = default + 0.5
        return value if meta.get("high") is None or value <= meta["high"] else default - 0.5
    return f"{default}x"


def flag_words(name: str, value) -> list[str]:
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool):
        return [flag if value else f"--no-{name.replace('_', '-')}"]
    return [flag, str(value)]
