"""The backbone table ``edgetl backbones`` prints: the registry's specs, and with ``details`` each one built (TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgetl.errors import EdgetlError
from edgetl.model.registry import get, list_backbones


def backbone_table(pattern: str = "*", details: bool = False, alpha: Optional[float] = None,
                   size: Optional[int] = None, weights_dir: Optional[str] = None, progress: bool = True) -> str:
    """What ``edgetl backbones`` prints: one row per backbone matching ``pattern``, then each one's description.

    Columns: default input size, widths, ImageNet widths and whether its int8
    files are Edge TPU compatible (``BackboneSpec.edgetpu_compatible``). With
    ``details`` each backbone is built without its top (needs TensorFlow; a few
    seconds each) and the table adds the width built, parameters, MACs per
    image and the local ImageNet weights file.

    Args:
      pattern: glob over registry names.
      details: build each backbone to count parameters and MACs.
      alpha: width for ``details`` (default: each backbone's).
      size: input side for ``details`` (default: each backbone's).
      weights_dir: offline weights folder searched by ``details``.
      progress: a progress bar while building.

    Raises:
      EdgetlError: no backbone matches ``pattern``.
    """
    from edgetl._table import format_table

    names = list_backbones(pattern)
    if not names:
        raise EdgetlError(f"No backbone matches '{pattern}'. Run 'edgetl backbones' to list all.")
    headers = ["name", "size", "alphas", "ImageNet alphas", "EdgeTPU"]
    costs = {}
    if details:
        from tqdm import tqdm

        from edgetl.model.head import backbone_cost

        headers += ["alpha", "params M", "MACs M", "local ImageNet file"]
        for name in tqdm(names, desc="building", unit="backbone", leave=False, disable=None if progress else True):
            costs[name] = backbone_cost(name, alpha if get(name).alphas else None, size, weights_dir)
    rows = []
    for name in names:
        spec = get(name)
        row = [name, spec.default_size if not details else costs[name].size, ",".join(str(a) for a in spec.alphas) or "-",
               ",".join(str(a) for a in spec.imagenet_alphas) or "yes", "yes" if spec.edgetpu_compatible else "no"]
        if details:
            cost = costs[name]
            row += [cost.alpha if cost.alpha is not None else "-", round(cost.params / 1e6, 2), round(cost.macs / 1e6, 1),
                    Path(cost.imagenet_file).name if cost.imagenet_file else "-"]
        rows.append(row)
    text = format_table(headers, rows)
    if not details:
        text += "\n" + "\n".join(f"  {name}: {get(name).description}" for name in names if get(name).description)
    return text


__all__ = ["backbone_table"]
