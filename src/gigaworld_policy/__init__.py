"""GigaWorld-Policy: an action-centered world-action model for robot learning."""

__version__ = "0.1.0"
