"""Screenshots for the README, made small: a palette PNG under a byte budget (used by the screenshot scripts)."""
from __future__ import annotations

import io


def shrink(png: bytes, max_bytes: int, colours=(256, 128, 64, 32)) -> bytes:
    """The picture as a palette PNG with the most of ``colours`` that fits under ``max_bytes``."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    for count in colours:
        buffer = io.BytesIO()
        image.quantize(colors=count, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
    raise RuntimeError(f"the screenshot stays above {max_bytes} bytes; use a smaller --width/--height")
