"""The guide's words (``upgrader.core.guide_texts``) as rich markup: ``Messages(lang)("key", field=value)``
fills a text's ``{fields}`` escaped (a path or a reason holding ``[/bold]`` is shown as written), except a
``Markup`` value (a text this catalog rendered, a coloured mark). The catalog itself, and
``Messages.plain`` for texts without markup, import no rich and live in the core."""

from __future__ import annotations

from rich.markup import escape

from ..core.guide_texts import MESSAGES, PHASES, RULES, Markup
from ..core.guide_texts import Messages as PlainMessages

__all__ = ["MESSAGES", "RULES", "PHASES", "Messages", "Markup", "PlainMessages"]

#: the marks before a rule, check or probe line
_MARKS = {"pass": Markup("[green]✔[/green]"), "fail": Markup("[red]✘[/red]"), "skip": Markup("[dim]·[/dim]"),
          "warn": Markup("[yellow]![/yellow]")}


def _field(value: object) -> object:
    if isinstance(value, (Markup, int, float)):
        return value  # numbers keep their format specs ({seconds:.1f})
    return escape(str(value))


class Messages(PlainMessages):
    """``t("key", field=value)``: the text of a key in the chosen language, as rich markup."""

    def __call__(self, msg: str, **fields: object) -> Markup:
        """The text with its fields escaped, as rich markup."""
        return Markup(self._table[msg][self._i].format(**{k: _field(v) for k, v in fields.items()}))
