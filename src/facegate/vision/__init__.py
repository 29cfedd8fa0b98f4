"""Pure image -> face functions: decode, detect, align, quality, embed. No storage here."""

from .align import ARCFACE_TEMPLATE, align, similarity_transform
from .decode import DEFAULT_MAX_PIXELS, ImageInput, decode
from .detect import Detection, FaceDetector
from .embed import Embedder
from .quality import assess, head_pose

__all__ = [
    "ARCFACE_TEMPLATE",
    "DEFAULT_MAX_PIXELS",
    "Detection",
    "Embedder",
    "FaceDetector",
    "ImageInput",
    "align",
    "assess",
    "decode",
    "head_pose",
    "similarity_transform",
]
