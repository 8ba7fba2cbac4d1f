"""TFDS builder for LUS frame datasets (one example per frame); see `lus_frames_builder`.

It lives in its own module directory because TFDS ties a builder's metadata
(name, checksums folder) to its module.
"""

from data_prep.lus_frames.lus_frames_builder import LusFrames, features_dict

__all__ = ["LusFrames", "features_dict"]
