"""Agent, risk-level predictor and mixer networks (flax linen, pure ``apply``).

Shape legend: N agents, A actions, M atoms, K risk levels, E embedding size,
H hidden size, I agent input size, S state size. Leading batch axes are free.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rmix_jax import ops


@struct.dataclass
class AgentCarry:
    """Recurrent state of one agent: the value branch and the risk branch."""

    hidden: jax.Array  # (..., H)
    risk_hidden: jax.Array  # (..., H)


@struct.dataclass
class AgentOutput:
    atoms: jax.Array  # (..., A, M) return atoms per action
    scores: jax.Array  # (..., K) risk-level scores (zeros when there is no predictor)


# The risk predictor's own parameters (the atom head it reads is the value branch's).
RISK_PREDICTOR_PARAMS = ("risk_torso", "risk_gru", "history_embed", "current_embed")


def predictor_norm(agent_tree: dict) -> jax.Array:
    """Global norm of the risk predictor's part of an agent's variables (parameters or their gradient;
    0 for an agent without a predictor)."""
    inner = agent_tree["params"]
    return optax.tree.norm([inner[name] for name in RISK_PREDICTOR_PARAMS if name in inner])


def _standardize_by(values: jax.Array, mean: jax.Array, variance: jax.Array) -> jax.Array:
    """(values - mean) / sqrt(variance + 1e-6), statistics held fixed (no gradient into them)."""
    mean, variance = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(variance)
    return jax.nn.standardize(values, axis=-1, mean=mean, variance=variance, epsilon=1e-6)


def unit_length(vectors: jax.Array) -> jax.Array:
    """(..., E) -> (..., E) over sqrt(|v|^2 + 0.01): about unit length for the O(sqrt(E))-long embeddings
    of standardized atoms; a zero vector stays zero with a bounded gradient (at most 10)."""
    return vectors * jax.lax.rsqrt(jnp.sum(vectors**2, axis=-1, keepdims=True) + 1e-2)


def zero_carry(batch_shape: tuple[int, ...], hidden_dim: int) -> AgentCarry:
    zeros = jnp.zeros((*batch_shape, hidden_dim), jnp.float32)
    return AgentCarry(hidden=zeros, risk_hidden=zeros)


class AgentNetwork(nn.Module):
    """The RMIX agent, parameters shared by all agents.

    Value branch: ``Dense(H) -> ReLU -> GRUCell(H) -> Dense(A*M)`` giving M Dirac atoms
    per action. Risk branch psi (paper Eqn. 3, Fig. 3): ``Dense(H) -> ReLU -> GRUCell(H)``
    over the previous step's inputs; the atom head (its parameters under
    stop-gradient) turns that hidden state into history atoms, embedded as ``(K, E)``;
    the current atoms (stop-gradient) are embedded as ``(E,)``; the score of level k is
    the dot product of the two.

    ``risk_scores`` says what is embedded:

    - ``standardized`` (default): both sets of A * M atoms are measured in the current
      atoms' units (minus their mean, over their standard deviation) before they are
      embedded, both embeddings are scaled to unit length, and the score of level k is
      ``risk_temperature`` times the cosine of the two. The scores depend on the shape of
      the return distributions alone (adding a constant to every atom, or scaling them all
      by c > 0, leaves them unchanged) and lie in [-T, T], so P(alpha) can neither
      saturate as the returns grow nor be driven one-hot by the predictor's own weights:
      its entropy stays above a floor set by T and K, and the straight-through gradient
      never vanishes.
    - ``paper``: the raw atoms, scores over sqrt(H) (Eqn. 3 as published). Both
      embeddings are linear in atoms that share the head's bias, so the scores grow with
      the square of the atoms' common offset, and P(alpha) turns one-hot (no gradient)
      once the returns are a few tens of units large.

    The step is split in three so that training runs only the recurrences inside
    the scan over time: ``torsos`` and ``heads`` act on all time steps at once.
    ``__call__`` is one whole step, for acting.
    """

    num_actions: int
    num_atoms: int
    hidden_dim: int = 64
    num_risk_levels: int = 10
    risk_embed_dim: int = 2
    use_risk_predictor: bool = True
    risk_scores: str = "standardized"  # or "paper"
    risk_temperature: float = 3.0  # T of the standardized scores: they lie in [-T, T]
    atom_head: str = "free"  # or "ascending": each action's atoms sorted by construction (ops.ascending_atoms)

    def setup(self) -> None:
        head_size = self.num_actions * self.num_atoms
        self.torso = nn.Dense(self.hidden_dim)
        self.gru = nn.GRUCell(self.hidden_dim)
        self.head_kernel = self.param("head_kernel", nn.initializers.lecun_normal(), (self.hidden_dim, head_size))
        self.head_bias = self.param("head_bias", nn.initializers.zeros_init(), (head_size,))
        if self.use_risk_predictor:
            self.risk_torso = nn.Dense(self.hidden_dim)
            self.risk_gru = nn.GRUCell(self.hidden_dim)
            self.history_embed = nn.Dense(self.num_risk_levels * self.risk_embed_dim, use_bias=False)
            self.current_embed = nn.Dense(self.risk_embed_dim, use_bias=False)

    def torsos(self, inputs: jax.Array, prev_inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(..., I) current and previous-step inputs -> (..., H) features of each branch."""
        features = nn.relu(self.torso(inputs))
        if not self.use_risk_predictor:
            return features, jnp.zeros_like(features)
        return features, nn.relu(self.risk_torso(prev_inputs))

    def recur(self, carry: AgentCarry, features: tuple[jax.Array, jax.Array], reset: jax.Array) -> AgentCarry:
        """GRU steps of both branches; hidden states restart at zero where ``reset``."""
        keep = (1.0 - reset.astype(jnp.float32))[..., None]
        hidden, _ = self.gru(carry.hidden * keep, features[0])
        if not self.use_risk_predictor:
            return AgentCarry(hidden, carry.risk_hidden)
        risk_hidden, _ = self.risk_gru(carry.risk_hidden * keep, features[1])
        return AgentCarry(hidden, risk_hidden)

    def atoms_of(self, flat: jax.Array) -> jax.Array:
        """The head's outputs (..., A*M) -> atoms (..., A, M), ascending per action with ``atom_head="ascending"``."""
        atoms = flat.reshape(*flat.shape[:-1], self.num_actions, self.num_atoms)
        return ops.ascending_atoms(atoms) if self.atom_head == "ascending" else atoms

    def chosen_atoms(self, hidden: jax.Array, actions: jax.Array) -> jax.Array:
        """Hidden states (..., H) and actions (...) int -> the actions' atoms (..., M): the same values as
        taking them from ``heads``, with a gradient that forms only what one action per row needs
        (``ops.chosen_affine``)."""
        lead = hidden.shape[:-1]
        onehot = jax.nn.one_hot(actions.reshape(-1), self.num_actions, dtype=hidden.dtype)
        raw = ops.chosen_affine(hidden.reshape(-1, hidden.shape[-1]), self.head_kernel, self.head_bias, onehot)
        raw = raw.reshape(*lead, self.num_atoms)
        return ops.ascending_atoms(raw) if self.atom_head == "ascending" else raw

    def atom_statistics(self, hidden: jax.Array, flat_atoms: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Where the current atoms (flat (..., A*M)) sit: ``shift`` (their mean minus the mean of the
        head's bias) and ``variance``, both (..., 1), under stop-gradient.

        Free atoms ``h K + b`` are linear in the hidden state, so both come from ``h`` alone: the
        mean is ``h kbar + m`` (kbar the mean of K's columns, m the bias's mean) and the variance a
        quadratic form ``(|h K_c + b_c|^2) / D`` with K_c, b_c centred, computed with the (H, H) Gram
        matrix of K_c rather than from the A*M atoms. The bias's mean, where a large common offset of
        the returns sits, is taken out before any product, so an offset of -50 costs no float32
        precision. The ascending head's atoms are not linear in ``h``; their statistics are computed
        from the atoms."""
        kernel, bias = jax.lax.stop_gradient(self.head_kernel), jax.lax.stop_gradient(self.head_bias)
        hidden = jax.lax.stop_gradient(hidden)
        if self.atom_head == "ascending":
            flat_atoms = jax.lax.stop_gradient(flat_atoms)
            return (jnp.mean(flat_atoms, axis=-1, keepdims=True) - jnp.mean(bias),
                    jnp.var(flat_atoms, axis=-1, keepdims=True))
        size = kernel.shape[1]
        column_mean = jnp.mean(kernel, axis=1)  # (H,)
        kernel_c, bias_c = kernel - column_mean[:, None], bias - jnp.mean(bias)
        gram = kernel_c @ kernel_c.T  # (H, H)
        quadratic = jnp.sum((hidden @ gram) * hidden, axis=-1, keepdims=True)
        cross = 2.0 * (hidden @ (kernel_c @ bias_c))[..., None]
        variance = jnp.maximum(quadratic + cross + jnp.sum(bias_c**2), 0.0) / size
        return (hidden @ column_mean)[..., None], variance

    def embedded_atoms(self, embed: nn.Module, state: jax.Array, shift: jax.Array, variance: jax.Array,
                       standardized: bool) -> jax.Array:
        """``embed`` (a bias-free Dense) of the free atoms this head gives for ``state`` (its parameters
        held fixed), standardized by the current atoms' ``shift`` and ``variance`` (``atom_statistics``).

        The atoms ``state K + b`` are linear in the state, and so is standardizing them by given
        statistics, so the embedding is ``state (K W) + b W`` (standardized: ``(b - m) W - shift 1 W``,
        over the std) without forming the A*M atoms: (H, E') instead of an (H, A*M) and an (A*M, E')
        product per step."""
        kernel, bias = jax.lax.stop_gradient(self.head_kernel), jax.lax.stop_gradient(self.head_bias)
        # embed has no bias: applied to K, b and ones it gives K W, b W and 1 W.
        if not standardized:
            return state @ embed(kernel) + embed(bias)
        centred = embed(bias - jnp.mean(bias)) - shift * embed(jnp.ones_like(bias))
        return (state @ embed(kernel) + centred) * jax.lax.rsqrt(variance + 1e-6)

    def history_scores(self, risk_hidden: jax.Array, shift: jax.Array, variance: jax.Array,
                       standardized: bool) -> jax.Array:
        """``history_embed`` of the atoms this head would give for the history (its parameters held
        fixed), standardized by the current atoms' statistics: (..., K*E).

        Measured in the current atoms' units rather than their own, the history atoms keep where
        the two distributions sit relative to each other, and the gradient into them is a plain
        1 / std of the current ones, even where they are constant (the head's bias alone, at an
        episode's first step before training)."""
        if self.atom_head != "ascending":
            return self.embedded_atoms(self.history_embed, risk_hidden, shift, variance, standardized)
        kernel, bias = jax.lax.stop_gradient(self.head_kernel), jax.lax.stop_gradient(self.head_bias)
        history_atoms = self.atoms_of(risk_hidden @ kernel + bias)
        history_atoms = history_atoms.reshape(*history_atoms.shape[:-2], -1)
        if standardized:
            history_atoms = _standardize_by(history_atoms, shift + jnp.mean(bias), variance)
        return self.history_embed(history_atoms)

    def heads(self, carry: AgentCarry) -> AgentOutput:
        """Hidden states (..., H) -> atoms (..., A, M) and risk scores (..., K)."""
        atoms = self.atoms_of(carry.hidden @ self.head_kernel + self.head_bias)
        if not self.use_risk_predictor:
            return AgentOutput(atoms, jnp.zeros((*atoms.shape[:-2], self.num_risk_levels), jnp.float32))
        flat_atoms = atoms.reshape(*atoms.shape[:-2], -1)
        standardized = self.risk_scores == "standardized"
        shift, variance = self.atom_statistics(carry.hidden, flat_atoms)
        history = self.history_scores(carry.risk_hidden, shift, variance, standardized)
        history = history.reshape(*history.shape[:-1], self.num_risk_levels, self.risk_embed_dim)
        if self.atom_head != "ascending":
            current = self.embedded_atoms(self.current_embed, carry.hidden, shift, variance, standardized)
        else:
            current_atoms = jax.lax.stop_gradient(flat_atoms)
            if standardized:
                current_atoms = _standardize_by(current_atoms, shift + jnp.mean(self.head_bias), variance)
            current = self.current_embed(current_atoms)
        if standardized:
            history, current = unit_length(history), unit_length(current)
            scale = 1.0 / self.risk_temperature
        else:
            scale = math.sqrt(self.hidden_dim)
        scores = jnp.einsum("...ke,...e->...k", history, current) / scale
        return AgentOutput(atoms, scores)

    def __call__(
        self, carry: AgentCarry, inputs: jax.Array, prev_inputs: jax.Array, reset: jax.Array
    ) -> tuple[AgentCarry, AgentOutput]:
        """One step.

        Args:
          carry: hidden states (..., H).
          inputs: (..., I) ``[obs, one_hot(last_action), one_hot(agent_id)]``.
          prev_inputs: (..., I) the previous step's inputs (zeros at an episode start).
          reset: (...,) True at an episode's first step: the hidden states restart at zero.
        """
        carry = self.recur(carry, self.torsos(inputs, prev_inputs), reset)
        return carry, self.heads(carry)


class QMixer(nn.Module):
    """QMIX mixing network (paper Eqn. 4): monotone in every agent value.

    Hypernetworks of the state give non-negative weights (absolute values), so
    ``dC_tot / dC_i >= 0``.
    """

    embed_dim: int = 32
    hypernet_hidden: int = 64

    @nn.compact
    def __call__(self, agent_values: jax.Array, state: jax.Array) -> jax.Array:
        """agent_values: (..., N), state: (..., S) -> (..., 1)."""
        num_agents = agent_values.shape[-1]
        e = self.embed_dim

        def hyper(name: str, out: int) -> jax.Array:
            h = nn.relu(nn.Dense(self.hypernet_hidden, name=f"{name}_hidden")(state))
            return jnp.abs(nn.Dense(out, name=f"{name}_out")(h))

        w1 = hyper("w1", num_agents * e).reshape(*state.shape[:-1], num_agents, e)
        b1 = nn.Dense(e, name="b1")(state)
        hidden = nn.elu(jnp.einsum("...n,...ne->...e", agent_values, w1) + b1)
        w_final = hyper("w_final", e)
        v = nn.Dense(1, name="v_out")(nn.relu(nn.Dense(e, name="v_hidden")(state)))
        return jnp.sum(hidden * w_final, axis=-1, keepdims=True) + v


class SumMixer(nn.Module):
    """VDN / RDN: C_tot is the plain sum of the agents' values."""

    @nn.compact
    def __call__(self, agent_values: jax.Array, state: jax.Array) -> jax.Array:
        del state
        return jnp.sum(agent_values, axis=-1, keepdims=True)


class NoMixer(nn.Module):
    """IQL: every agent learns its own value from the team reward."""

    @nn.compact
    def __call__(self, agent_values: jax.Array, state: jax.Array) -> jax.Array:
        del state
        return agent_values


def make_mixer(kind: str, embed_dim: int, hypernet_hidden: int) -> nn.Module:
    if kind == "qmix":
        return QMixer(embed_dim=embed_dim, hypernet_hidden=hypernet_hidden)
    if kind == "vdn":
        return SumMixer()
    if kind == "none":
        return NoMixer()
    raise ValueError(f"unknown mixer {kind!r}; use one of qmix, vdn, none")
