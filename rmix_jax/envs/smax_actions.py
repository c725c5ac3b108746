"""SMAX's discrete action layout (JaxMARL's ``SMAX``), in one place (a leaf module: NumPy only).

Indices: ``0..3`` move north, east, south, west; ``4`` stop; ``5 + j`` attack enemy ``j``;
with ``env.dead_noop`` one more, last, action: the no-op only dead units have (SMAC's). The
adapter (``SMAXAdapter.actions``) checks JaxMARL's env against it; the SMAC bridge, the analysis
and the benchmarks read indices from it.
"""

from __future__ import annotations

from dataclasses import dataclass

MOVE_NAMES = ("north", "east", "south", "west")


@dataclass(frozen=True)
class SMAXActions:
    num_enemies: int
    dead_noop: bool = False

    num_moves = len(MOVE_NAMES)  # class constants: the layout JaxMARL's SMAX uses on every map
    stop = num_moves
    first_attack = num_moves + 1

    @property
    def noop(self) -> int | None:
        """The dead units' no-op (with ``dead_noop``), else None."""
        return self.first_attack + self.num_enemies if self.dead_noop else None

    @property
    def num_actions(self) -> int:
        return self.first_attack + self.num_enemies + int(self.dead_noop)

    @classmethod
    def for_num_actions(cls, num_actions: int, dead_noop: bool = False) -> SMAXActions:
        """The layout of a policy with ``num_actions`` outputs."""
        return cls(num_enemies=num_actions - cls.first_attack - int(dead_noop), dead_noop=dead_noop)

    def names(self) -> list[str]:
        names = [*MOVE_NAMES, "stop", *(f"attack {j}" for j in range(self.num_enemies))]
        return names + ["no-op (dead)"] if self.dead_noop else names
