"""What a step is sent: its template filled with inputs and the upstream outputs it sees.

Outputs a step sees but its template does not name are appended as context, so a sequential
step learns what earlier steps covered. Upstream fields that a strategy withholds (parallel
steps run before their declared dependencies) are filled with a note saying so.
"""

from __future__ import annotations

from collections.abc import Mapping

from chainray.spec.templates import fill_template, template_fields

__all__ = ["render_prompt", "CONTEXT_CHARS"]

CONTEXT_CHARS = 300  # per earlier step in the appended context; keeps sequential prompts short


def render_prompt(
    template: str, inputs: Mapping[str, str | None], seen: Mapping[str, str],
    upstream_ids: tuple[str, ...] = (),
) -> str:
    """Fill ``template``.

    ``inputs`` are the chain's inputs, ``seen`` the outputs this step receives under its
    strategy, ``upstream_ids`` the step's declared dependencies (fields the strategy withholds
    are filled with a note).
    """
    named = {name.split(".")[0] for name, _ in template_fields(template)}
    values: dict[str, str] = {k: v or "" for k, v in inputs.items()}
    for step_id in upstream_ids:
        values[step_id] = f"[{step_id}: not available, it runs at the same time as this step]"
    values.update(seen)
    prompt = fill_template(template, values)
    extra = [step_id for step_id in seen if step_id not in named]
    if extra:
        lines = [f"- {step_id}: {_clip(seen[step_id])}" for step_id in extra]
        prompt += "\n\nPreviously covered by earlier steps:\n" + "\n".join(lines)
    return prompt


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= CONTEXT_CHARS else text[:CONTEXT_CHARS] + "..."
