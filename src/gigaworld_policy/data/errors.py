"""Errors of the data pipeline. Messages name the file, episode and feature involved."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset on disk is missing, malformed, inconsistent with its metadata, or fails to decode."""


class StatsMismatchError(DatasetError):
    """A normalization-statistics file does not belong to the dataset (or settings) it is used with."""


class VideoEncodeError(DatasetError):
    """The video encoder or muxer failed while writing: a fault of the encoding run, not of the frames.

    libsvtav1 has three times handed back a packet the mp4 muxer refused (EINVAL) under heavy CPU load, and
    not on re-runs of the same frames (one reason H.264 is the default encoder: data/video.py
    ``pick_video_codec``); writers that can regenerate their frames deterministically (``gwp collect``)
    retry on it.
    """
