"""Versioned prompt packs: ``server/prompts/<task>@v<N>.md`` (shipped in the wheel).

A pack is a system message, a line ``=== user ===``, and the user message template with
``{placeholders}``. The newest version of a task's pack is used and stored with each
answer, so an answer can be traced to the prompt that produced it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from .records import AssistError


@dataclass(frozen=True)
class PromptPack:
    task: str
    version: str    # "explain@v1"
    system: str
    user: str

    def render(self, **values: str) -> list[dict[str, str]]:
        class Blank(dict):
            def __missing__(self, key: str) -> str:
                return ""
        return [{"role": "system", "content": self.system.format_map(Blank(values)).strip()},
                {"role": "user", "content": self.user.format_map(Blank(values)).strip()}]


def load_pack(task: str, version: int | None = None) -> PromptPack:
    """The prompt pack for ``task``, read now (packs are files): its newest version, or ``version``
    (an earlier one, for benchmarks that compare them).

    Raises:
        AssistError: no such pack.
    """
    folder = resources.files("server").joinpath("prompts")
    versions = sorted((int(m.group(1)), f.name) for f in folder.iterdir()
                      if (m := re.fullmatch(re.escape(task) + r"@v(\d+)\.md", f.name)))
    if version is not None:
        versions = [v for v in versions if v[0] == version]
    if not versions:
        raise AssistError(f"no prompt pack for {task!r}" + (f" at version {version}" if version is not None else ""))
    name = versions[-1][1]
    system, _, user = folder.joinpath(name).read_text("utf-8").partition("=== user ===")
    return PromptPack(task, name[:-3], system, user)


