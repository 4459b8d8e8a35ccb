"""Decoding image files safely: the size an image declares is checked before its pixels are decoded, so that a
small file declaring a huge image (a decompression bomb) is refused instead of exhausting memory."""

from __future__ import annotations

import io

import cv2
import numpy as np

#: The most pixels an image may declare: Pillow's own default limit (about 9,459 x 9,459); a real face photo or
#: panel capture is far below it.
MAX_IMAGE_PIXELS = 89_478_485
#: The largest image file read whole into memory (a file cell of a saved dataset, say): 256 MB.
MAX_FILE_BYTES = 256 << 20


class ImageTooLarge(ValueError):
    """An image that declares more pixels than :data:`MAX_IMAGE_PIXELS`."""


def declared_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding its pixels; None when the header is not one
    Pillow reads (OpenCV then decides)."""
    import warnings

    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the header's size is wanted, not Pillow's check
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(bytes(data))) as image:
            warnings.simplefilter("ignore")
            return image.size
    except Exception:  # noqa: BLE001 - any header Pillow cannot read is left to OpenCV
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def encode(image_rgb: np.ndarray, suffix: str = ".png", jpeg_quality: int = 95) -> bytes:
    """An RGB uint8 image as the bytes of a ``suffix`` file (PNG, or JPEG at ``jpeg_quality``)."""
    from udcbench.errors import UdcbenchError

    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise UdcbenchError(f"cannot encode {suffix} images")
    return data.tobytes()


def decode(data: bytes | np.ndarray, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """``cv2.imdecode`` after the pixel check (:class:`ImageTooLarge`); None when OpenCV cannot decode it. A file
    whose size its header does not tell (a format Pillow cannot read: Radiance HDR, OpenEXR, PFM, ... which OpenCV
    decodes whatever size they declare) is refused too: every image udcbench reads (PNG, JPEG, BMP, TIFF, WebP)
    declares its size."""
    size = declared_size(data)
    if size is None:
        head = bytes(data[:16]) if len(data) else b""
        if head:  # an empty or unreadable file stays OpenCV's "not decodable" (None)
            raise ImageTooLarge(f"its size cannot be read from its header (a format udcbench does not read, "
                                f"starting {head[:10]!r}): refused before decoding")
        return None
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"declares {size[0]} x {size[1]} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
                            "(udcbench.images.MAX_IMAGE_PIXELS)")
    return cv2.imdecode(np.frombuffer(bytes(data), np.uint8) if isinstance(data, bytes) else data, flags)
