"""``deployinc models``: the zoo — name, family, input size, parameters, config file."""

from __future__ import annotations

import click

from ..config import bundled_config_path
from ..errors import BadInputError


@click.command()
@click.option("--source", type=click.Choice(["all", "builtin", "torchvision"]), default="all", help="Which models to list.")
@click.option("--family", default=None, help="Only this family (inception, resnet, mobilenet, depthwise, other).")
@click.option("--count-params", is_flag=True, help="Build each model to count its parameters (slow).")
def models(source: str, family: str | None, count_params: bool) -> None:
    """List the models deployinc can export by name (exit 2 for an unknown --family)."""
    from ..models import registry  # lazy: models imports numpy; keeps it out of deployinc --help

    rows = []
    infos = [registry.get_model_info(name) for name in registry.list_models(None if source == "all" else source)]
    if family is not None:
        known = sorted({registry.get_model_info(n).family for n in registry.list_models(None)})
        if family.strip().lower() not in known:
            raise BadInputError(f"unknown family {family!r}", hint=f"known families: {', '.join(known)}")
    for info in infos:
        name = info.name
        if family and info.family != family.strip().lower():
            continue
        params = info.num_params
        if params is None and (count_params or info.source == "builtin"):
            params = sum(p.numel() for p in registry.create_model(name).parameters())
        cfg = bundled_config_path(name)
        rows.append(
            (
                name,
                info.family,
                "x".join(str(v) for v in info.input_size),
                f"{params / 1e6:.2f}M" if params else "-",
                info.source,
                f"export_configs/{cfg.name}" if cfg else "",
            )
        )
    headers = ("name", "family", "input", "params", "source", "config")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    click.echo(f"\n{len(rows)} models; timm models as timm/<name> when timm is installed; your own as package.module:function")
