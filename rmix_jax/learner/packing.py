"""Sampled episodes laid end to end in fewer rows, so that an update pays only for stored steps.

A sampled batch holds B episodes padded to T + 1 entries each; a battle of 18 steps fills 19
of 101. ``pack`` lays the episodes one after another along rows of T + 1 entries (next fit:
an episode that does not fit in what is left of a row starts the next row), each still
starting with its ``reset`` entry and ending with the entry after its last step (the final
observation that truncation bootstraps on). Every entry after a row's last episode is zero
(not ``filled``, no available action), so the losses, which mask by ``filled`` and restart
the recurrences at ``reset``, give the same values on the packed rows as on the padded
batch: only the summation order differs.

Shape legend: B episodes, L entries per row (T + 1), R rows.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rmix_jax.learner.types import Episode


def entries_per_episode(batch: Episode) -> chex.Array:
    """(B,) int32: the stored entries each episode needs, its steps and the entry after its last."""
    return jnp.minimum(jnp.sum(batch.filled, axis=1).astype(jnp.int32) + 1, batch.filled.shape[1])


def next_fit(entries: chex.Array, length: int) -> tuple[chex.Array, chex.Array]:
    """Next-fit of episodes of ``entries`` (B,) into rows of ``length``: each episode's first
    flat position (row * length + column) (B,) and the number of rows used ()."""

    def place(carry, size):
        row, column = carry
        starts_row = column + size > length
        row, column = jnp.where(starts_row, row + 1, row), jnp.where(starts_row, 0, column)
        return (row, column + size), row * length + column

    (last_row, _), starts = jax.lax.scan(place, (jnp.int32(0), jnp.int32(0)), entries)
    return starts, last_row + 1


def rows_needed(batch: Episode) -> chex.Array:
    """() int32: the rows of T + 1 entries that ``pack`` fills with this batch."""
    return next_fit(entries_per_episode(batch), batch.filled.shape[1])[1]


def pack(batch: Episode, rows: int) -> Episode:
    """The batch's episodes laid end to end in ``rows`` rows of T + 1 entries (next fit, in the
    batch's order); zeros after the last episode. ``rows`` must be at least ``rows_needed(batch)``:
    episodes past the last row are dropped."""
    num_episodes, length = batch.filled.shape
    entries = entries_per_episode(batch)
    starts, _ = next_fit(entries, length)
    position = jnp.arange(rows * length, dtype=jnp.int32)
    # The episode each position falls in (the starts ascend), and the entry of it.
    episode = jnp.clip(jnp.searchsorted(starts, position, side="right") - 1, 0, num_episodes - 1)
    entry = position - starts[episode]
    source = jnp.where(entry < entries[episode], episode * length + entry, num_episodes * length)

    def gather(values: chex.Array) -> chex.Array:
        flat = values.reshape(num_episodes * length, *values.shape[2:])
        flat = jnp.concatenate([flat, jnp.zeros_like(flat[:1])])  # the zero entry for unused positions
        return flat[source].reshape(rows, length, *values.shape[2:])

    return jax.tree.map(gather, batch)
