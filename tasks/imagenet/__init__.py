"""ImageNet classification (ILSVRC-2012, ImageFolder layout) and a generated JPEG stand-in."""

from joulebench.tasks.imagenet.task import ImageNet

__all__ = ["ImageNet"]
