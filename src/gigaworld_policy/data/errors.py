"""Errors of the data pipeline. Messages name the file, episode and feature involved."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset on disk is missing, malformed, inconsistent with its metadata, or fails to decode."""


class StatsMismatchError(DatasetError):
    """A normalization-statistics file does not belong to the dataset (or settings) it is used with."""
