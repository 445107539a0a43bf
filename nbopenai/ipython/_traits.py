"""The traitlets of ``AskMagics``, generated from the ``Settings`` fields: one trait per setting.

Each trait is a *view* of the session's setting, not a copy: reading it reads
``session.settings``, setting it (``%config AskMagics.x = ...``, ``c.AskMagics.x`` in
``ipython_config.py``) calls ``session.configure``, where the setting's rule checks it. So the
traits cannot drift from the session (``%nbopenai local``, ``session.configure``, or a changed
``OPENAI_BASE_URL`` or ``NBOPENAI_MODEL`` that the next request takes up, are seen at once), a bad
value is refused with the same ``UsageError`` as ``Session(...)`` gives, and a new setting becomes a
trait without a line here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import traitlets

from .._core._settings import Settings, Timeouts, check_setting, setting_fields

__all__ = ["setting_traits"]


class _FollowsSession:
    """A trait whose value lives in ``obj.session.settings`` (``obj`` has a ``session``)."""

    name: str
    shown: Any = None  # what `%config AskMagics` may show of the value (a URL without its credentials)

    def get(self, obj: Any, cls: Any = None) -> Any:
        # What the next request will use: settings read from the environment take up its changes first
        # (as the request itself and `%nbopenai status` do), not the value read when the extension loaded.
        obj.session.follow_environment()
        value = obj.session.settings.get(self.name)
        return self.shown(value) if self.shown is not None else value

    def set(self, obj: Any, value: Any) -> None:
        check_setting(self.name, value)  # the setting's rule, first: its message, not traitlets'
        value = self._validate(obj, value)  # type: ignore[attr-defined]  # the trait's coercion (int -> float)
        obj.session.configure(**{self.name: value})


# Named as traitlets' own classes: `%config AskMagics` shows `<Float>`, and lists an Enum's choices.
class Unicode(_FollowsSession, traitlets.Unicode):
    pass


class Float(_FollowsSession, traitlets.Float):
    pass


class Int(_FollowsSession, traitlets.Int):
    pass


class Bool(_FollowsSession, traitlets.Bool):
    pass


class Enum(_FollowsSession, traitlets.Enum):
    pass


class Dict(_FollowsSession, traitlets.Dict):
    pass


_TRAITS: dict[type, type] = {str: Unicode, float: Float, int: Int, bool: Bool, dict: Dict}


def _value_type(hint: Any) -> tuple[type, bool]:
    """The type a field holds, and whether it may be ``None``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return next(arg for arg in args if arg is not type(None)), type(None) in args
    return hint, False


def setting_traits(*, leave_out: tuple[str, ...] = ()) -> dict[str, traitlets.TraitType]:
    """A configurable trait for every setting (not the API key, nor ``leave_out``), with its help."""
    timeouts = {f"{phase}_timeout": hint for phase, hint in typing.get_type_hints(Timeouts).items()}
    hints = {**typing.get_type_hints(Settings), **timeouts}
    traits: dict[str, traitlets.TraitType] = {}
    for name, f in setting_fields().items():
        if name in leave_out:
            continue
        kind, optional = _value_type(hints[name])
        rule, help_text = f.metadata.get("rule"), f.metadata.get("help", "")
        if rule is not None and rule.choices:
            trait = Enum(rule.choices, None, allow_none=optional, help=help_text)
        else:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            trait = _TRAITS[typing.get_origin(kind) or kind](None if optional else default, allow_none=optional,
                                                              help=help_text)
        trait.shown = f.metadata.get("shown")
        traits[name] = trait.tag(config=True)
    return traits
