"""Token layout and attention masks: the whole method's structure in one short file.

One sample is a sequence of four blocks (DESIGN.md section 1):

  S  robot state, 1 token (see below)     timestep 0 (clean)
  R  reference (current) frame tokens      timestep 0 (clean)
  A  action chunk, 1 token per step        timestep t_a (noised)
  F  future video latent tokens            timestep t_v (noised)

Who may attend to whom (row = query block, column = key block):

  action_centered (the method)    joint (Motus-style)        no_video (ablation)
        S R A F                         S R A F                   S R A
    S   x x . .                     S   x x . .               S   x x .
    R   x x . .                     R   x x . .               R   x x .
    A   x x x .                     A   x x x x               A   x x x
    F   x x x x                     F   x x x x

S and R never see noised tokens in any mode, so their keys/values are constant across denoising steps
(the prefix cache). In ``action_centered`` A never sees F: actions do not depend on the future video,
which is what makes the video branch optional at deployment.

``reference_sees_state=False`` (``model.reference_sees_state``) also removes R -> S in every mode: the image
tokens then carry only what the image (and the prompt) holds, while A and F still see S. The prefix stays
clean, so the cache is unchanged.

``model.image_encoder_token`` makes S two tokens (the state's, and the image encoder's features); the
masks are per block, so nothing here changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

STATE, REFERENCE, ACTION, FUTURE = "S", "R", "A", "F"
PREFIX_BLOCKS = (STATE, REFERENCE)

_ALLOWED: dict[str, dict[str, frozenset[str]]] = {
    "action_centered": {
        STATE: frozenset("SR"), REFERENCE: frozenset("SR"), ACTION: frozenset("SRA"), FUTURE: frozenset("SRAF"),
    },
    "joint": {
        STATE: frozenset("SR"), REFERENCE: frozenset("SR"), ACTION: frozenset("SRAF"), FUTURE: frozenset("SRAF"),
    },
    "no_video": {STATE: frozenset("SR"), REFERENCE: frozenset("SR"), ACTION: frozenset("SRA")},
}


def allowed(mode: str, query_block: str, key_block: str, *, reference_sees_state: bool = True) -> bool:
    try:
        rules = _ALLOWED[mode]
    except KeyError:
        raise ValueError(f"attention_mode: unknown mode {mode!r}; known: {sorted(_ALLOWED)}") from None
    if query_block not in rules:
        raise ValueError(f"attention_mode={mode!r} has no {query_block!r} tokens")
    if query_block == REFERENCE and key_block == STATE and not reference_sees_state:
        return False
    return key_block in rules[query_block]


Blocks = Sequence[tuple[str, int]]  # (block name, token count) in sequence order


@lru_cache(maxsize=64)
def _mask_cached(mode: str, queries: tuple[tuple[str, int], ...], keys: tuple[tuple[str, int], ...],
                 reference_sees_state: bool) -> torch.Tensor | None:
    rows = []
    for qb, qn in queries:
        row = torch.cat([torch.full((qn, kn), allowed(mode, qb, kb, reference_sees_state=reference_sees_state),
                                    dtype=torch.bool) for kb, kn in keys], dim=1)
        rows.append(row)
    return torch.cat(rows, dim=0)


def attention_mask(mode: str, queries: Blocks, keys: Blocks, device: torch.device | str = "cpu", *,
                   reference_sees_state: bool = True) -> torch.Tensor | None:
    """Boolean self-attention mask [n_queries, n_keys] (True = may attend), or None when all True.

    ``queries`` and ``keys`` list the blocks in the order their tokens appear in the query and key
    sequences (with a prefix cache the keys start with the cached S/R tokens).
    """
    if all(allowed(mode, qb, kb, reference_sees_state=reference_sees_state) for qb, _ in queries for kb, _ in keys):
        return None  # decided in Python: no tensor work, and no data-dependent branch under torch.compile
    mask = _mask_cached(mode, tuple((b, int(n)) for b, n in queries), tuple((b, int(n)) for b, n in keys),
                        reference_sees_state)
    return None if mask is None else mask.to(device)


def token_passes(num_steps: int, n_context: int, n_action: int, n_future: int, *, cached: bool,
                 with_video: bool) -> int:
    """Tokens pushed through the network for one action chunk: the token-count cost model.

    Uncached decoding runs the whole sequence at each of ``num_steps`` steps; cached decoding runs the
    clean context once and then only the noised tokens.
    """
    noised = n_action + (n_future if with_video else 0)
    return n_context + num_steps * noised if cached else num_steps * (n_context + noised)
