"""The world-action model: network, token layout and masks, flow matching, tokenizers, text encoders."""

from gigaworld_policy.model.batch import BatchError, example_batch, validate
from gigaworld_policy.model.world_action_model import WorldActionModel

__all__ = ["BatchError", "WorldActionModel", "example_batch", "validate"]
