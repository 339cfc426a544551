"""Optimiser, learning-rate schedule, plateau controller and the jitted training steps.

``train_step(state, batch, norm) -> (state, aux)`` and ``eval_step(params, batch, norm) ->
error sums`` are pure functions built once per *static* setting by :func:`compiled_steps`, a
:func:`mlpjax.cache.compiled` factory keyed by the architecture (:class:`PotentialDef`), the
step-relevant hyperparameters (:class:`StepSettings`), ``compute_stress`` and
``jax_enable_x64``. The numbers fitted from the training data that the model's energy uses —
reference energies E0, ``energy_shift`` and ``energy_scale`` — are the traced argument ``norm`` (a
:class:`mlpjax.potential.PotentialParams` whose ``params`` are ignored), so nothing fitted is
hashed. The loss's energy unit σ (``StepSettings.loss_sigma``, the potential's energy scale when
training starts) is a static loss setting like the loss weights: with σ a compile-time constant XLA
folds 1/σ² into the loss and its gradient, which keeps training bit for bit what it was (a traced σ
changed the last bits of the loss, and through Adam the trained model at 1e-5 relative).

Forces and stress come from :meth:`PotentialDef.predict` (the potential's single gradient);
the loss is differentiated with respect to the network parameters only. Optimiser: clip →
Adam (→ decoupled weight decay for AdamW) → the schedule's shape with peak 1, multiplied by
``TrainState.lr_scale`` (peak learning rate × plateau factor, a runtime value: changing it
compiles nothing); then an exponential moving average (EMA) of the parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mlpjax.cache import compiled
from mlpjax.config import TrainConfig
from mlpjax.graph import GraphBatch
from mlpjax.potential import Potential, PotentialDef, PotentialParams, parameter_paths
from mlpjax.training.loss import error_sums, loss_from_sums, nll_loss


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree; the step is pure in it)."""

    step: jax.Array  # int32 scalar, optimiser steps taken
    params: Any
    ema_params: Any
    opt_state: Any
    lr_scale: jax.Array  # scalar: peak learning rate × plateau factor (multiplies the peak-1 schedule)
    plateau_state: Any  # optax.contrib.reduce_on_plateau state (updated once per evaluation)


class StepFns(NamedTuple):
    """The jitted steps with the optimiser and the peak-1 schedule they were built with.

    From :func:`compiled_steps`: ``train_step(state, batch, norm)``, ``eval_step(params, batch,
    norm)``; from :func:`make_step_fns`: the same with ``norm`` bound, ``train_step(state,
    batch)`` and ``eval_step(params, batch)``."""

    train_step: Callable
    eval_step: Callable
    optimizer: optax.GradientTransformation
    schedule: Callable  # optimiser step -> learning rate / peak learning rate


# the TrainConfig fields the compiled steps depend on (the learning rate is TrainState.lr_scale)
_STEP_FIELDS = ("optimizer", "weight_decay", "schedule", "warmup_epochs", "final_lr_fraction",
                "clip_grad_norm", "ema_decay", "energy_weight", "forces_weight", "stress_weight", "dtype")


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The hyperparameters the compiled steps close over (hashable: part of the compile-cache key)."""

    optimizer: str  # "adam" | "adamw"
    weight_decay: float
    schedule: str  # "warmup_cosine" | "plateau" | "constant"
    warmup_epochs: float
    final_lr_fraction: float
    clip_grad_norm: float | None
    ema_decay: float
    energy_weight: float
    forces_weight: float
    stress_weight: float
    dtype: str
    epochs: int | None = None  # warmup_cosine only: the schedule's length is epochs × steps_per_epoch
    steps_per_epoch: int | None = None
    # eV, the loss's energy unit σ (the potential's energy_scale when training starts): a loss setting,
    # static like the weights. XLA folds 1/σ² into the loss and its gradient; a traced σ would change the
    # last bits of every step (and, through Adam, of the trained model) against the same run before.
    loss_sigma: float = 1.0
    # parameter-path patterns kept fixed (fnmatch on "params/readout_0/kernel", see parameter_paths):
    # their updates are exactly zero, so they, and their EMA, stay bit for bit what they were
    freeze: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: TrainConfig, steps_per_epoch: int) -> "StepSettings":
        cosine = config.schedule == "warmup_cosine"
        return cls(**{k: getattr(config, k) for k in _STEP_FIELDS},
                   epochs=int(config.epochs) if cosine else None,
                   steps_per_epoch=int(steps_per_epoch) if cosine else None,
                   freeze=tuple(config.freeze))

    @property
    def weights(self) -> tuple[float, float, float]:
        """(w_E, w_F, w_S) of the loss."""
        return float(self.energy_weight), float(self.forces_weight), float(self.stress_weight)

    def lr_shape(self) -> Callable:
        """The learning-rate schedule with peak 1 (× ``TrainState.lr_scale`` in the step)."""
        return _schedule(1.0, self.schedule, self.epochs, self.steps_per_epoch, self.warmup_epochs,
                         self.final_lr_fraction)

    def make_optimizer(self) -> optax.GradientTransformation:
        """clip_by_global_norm → Adam (→ decoupled weight decay for AdamW) → :meth:`lr_shape`.

        With ``freeze`` patterns, ``optax.multi_transform`` routes the matching leaves to
        ``set_to_zero`` (exactly zero updates: no Adam step, no weight decay, no clipping share)
        and the rest through the chain above; a pattern that matches no leaf is a ConfigError
        when the optimiser is initialised (:func:`frozen_labels`)."""
        parts = []
        if self.clip_grad_norm is not None:
            parts.append(optax.clip_by_global_norm(float(self.clip_grad_norm)))
        parts.append(optax.scale_by_adam())
        if self.optimizer == "adamw" and self.weight_decay > 0:
            # decay trainable weights only: not fixed collections such as descriptor "scaling"
            parts.append(optax.add_decayed_weights(float(self.weight_decay), mask=_trainable_mask))
        # the schedule's shape with peak 1: the peak learning rate (× the plateau factor) is
        # TrainState.lr_scale, a runtime value, so changing it needs no recompilation
        parts.append(optax.scale_by_learning_rate(self.lr_shape()))
        chain = optax.chain(*parts)
        if not self.freeze:
            return chain  # exactly the optimiser (and optimiser state) of a run without freezing
        patterns = tuple(self.freeze)
        return optax.multi_transform({"train": chain, "frozen": optax.set_to_zero()},
                                     lambda params: frozen_labels(params, patterns))


def _schedule(lr: float, schedule: str, epochs, steps_per_epoch, warmup_epochs: float, final_lr_fraction: float) -> Callable:
    lr = float(lr)
    if schedule in ("constant", "plateau"):
        return optax.constant_schedule(lr)
    total = max(int(epochs) * int(steps_per_epoch), 1)
    warmup = int(round(min(warmup_epochs * steps_per_epoch, total / 2)))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup > 0 else lr,
        peak_value=lr,
        warmup_steps=warmup,
        decay_steps=max(total, warmup + 1),
        end_value=lr * float(final_lr_fraction),
    )


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable:
    """Learning rate as a function of the optimiser step (before the plateau multiplier)."""
    return _schedule(config.learning_rate, config.schedule, config.epochs, steps_per_epoch, config.warmup_epochs,
                     config.final_lr_fraction)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """clip_by_global_norm → Adam (→ decoupled weight decay for AdamW) → schedule (peak 1; see TrainState.lr_scale)."""
    return StepSettings.from_config(config, steps_per_epoch).make_optimizer()


def frozen_labels(params, patterns) -> Any:
    """``"frozen"`` on the leaves whose path (:func:`parameter_paths`) matches one of ``patterns``
    (``fnmatch.fnmatchcase``: ``*`` also crosses ``/``), ``"train"`` elsewhere (the labels of
    :meth:`StepSettings.make_optimizer`'s ``multi_transform``).

    Raises ConfigError when a pattern matches no leaf (naming close and example paths), or when the
    patterns match every leaf (nothing would train)."""
    import difflib
    import fnmatch

    from mlpjax.config import ConfigError

    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = parameter_paths(params)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(path, pattern) for path in paths):
            close = difflib.get_close_matches(pattern, paths, n=3, cutoff=0.3)
            examples = list(dict.fromkeys(close + paths[:: max(len(paths) // 6, 1)][:6]))
            raise ConfigError(f"freeze pattern {pattern!r} matches no parameter; the {len(paths)} parameter paths "
                              f"include {', '.join(examples)} (fnmatch patterns such as 'params/embedding/*'; "
                              "all of them: mlpjax train --init-from MODEL --list-params)", option="freeze")
    frozen = [any(fnmatch.fnmatchcase(path, p) for p in patterns) for path in paths]
    if frozen and all(frozen):
        raise ConfigError(f"freeze patterns {', '.join(map(repr, patterns))} match all {len(paths)} parameters: "
                          "nothing would train; freeze a part (e.g. 'params/embedding/*')", option="freeze")
    return jax.tree_util.tree_unflatten(treedef, ["frozen" if f else "train" for f in frozen])


def _trainable_mask(params):
    """True on the leaves of the ``"params"`` collection, False on other Flax collections."""
    if isinstance(params, dict) and "params" in params:
        return {k: jax.tree_util.tree_map(lambda _: k == "params", v) for k, v in params.items()}
    return jax.tree_util.tree_map(lambda _: True, params)


def make_plateau(config: TrainConfig) -> optax.GradientTransformationExtraArgs:
    """Reduce-on-plateau controller of the learning rate (stepped once per validation pass)."""
    return optax.contrib.reduce_on_plateau(
        factor=float(config.plateau_factor), patience=int(config.plateau_patience), rtol=1e-4, min_scale=1e-3
    )


def apply_gradients(state: TrainState, grads, optimizer: optax.GradientTransformation, ema_decay: float) -> TrainState:
    """One optimiser step of ``state`` with ``grads`` (traced inside the jitted steps): the optimiser's
    update × ``state.lr_scale``, then the EMA of the parameters (warm-up ``(1 + t) / (10 + t)``)."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    if ema_decay > 0:
        t = state.step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))  # warm-up of the average (TF ExponentialMovingAverage)
        # p + d (e - p): exactly p when the average has caught up (no rounding drift)
        ema = jax.tree_util.tree_map(lambda e, p: (p + decay * (e - p)).astype(p.dtype), state.ema_params, params)
    else:
        ema = params
    return state._replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)


@compiled(maxsize=16)
def compiled_steps(definition: PotentialDef, settings: StepSettings, compute_stress: bool, x64: bool) -> StepFns:
    """Jitted ``train_step(state, batch, norm) -> (state, aux)`` and ``eval_step(params, batch,
    norm) -> error sums`` (:func:`mlpjax.training.loss.error_sums`).

    ``norm``: a :class:`PotentialParams` with the fitted E0/shift/scale (its ``params`` are
    ignored; the step's parameters come from ``state`` / ``params``); the loss's σ is the static
    ``settings.loss_sigma``. Cached on the (static, hashable) arguments only; ``x64`` is
    ``jax.config.jax_enable_x64``, which changes what the traced code computes in.
    """
    del x64  # a key only
    weights = settings.weights
    sigma = float(settings.loss_sigma)
    optimizer = settings.make_optimizer()
    schedule = settings.lr_shape()
    ema_decay = float(settings.ema_decay)

    shallow = getattr(definition, "kind", None) == "shallow"  # an EnsembleDef with M heads: Gaussian NLL

    def loss_fn(params, batch: GraphBatch, norm: PotentialParams):
        variables = norm._replace(params=params)
        pred = definition.predict(variables, batch, compute_stress=compute_stress)  # (an ensemble: the mean)
        sums = error_sums(pred, batch, compute_stress)
        loss = loss_from_sums(sums, sigma, weights)
        if shallow:
            # the heads' spread is fitted by the NLL with the shared network held (stop_gradient): the NLL
            # moves only the heads' deviations from their mean (they sum to zero over the members), so the
            # mean model is trained by the squared error exactly as a single model is
            axes = definition.param_axes(params)
            held = jax.tree_util.tree_map(lambda a, x: x if a == 0 else jax.lax.stop_gradient(x), axes, params,
                                          is_leaf=lambda x: x is None)
            members = definition.member_predict(norm._replace(params=held), batch, compute_stress=False)
            loss = loss + nll_loss(members, batch, sigma, weights)
        return loss, sums

    def train_step(state: TrainState, batch: GraphBatch, norm: PotentialParams):
        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, norm)
        new_state = apply_gradients(state, grads, optimizer, ema_decay)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    def eval_step(params, batch: GraphBatch, norm: PotentialParams):
        pred = definition.predict(norm._replace(params=params), batch, compute_stress=compute_stress)
        return error_sums(pred, batch, compute_stress)

    # no buffer donation: best_params may alias the EMA parameters of an earlier state
    return StepFns(jax.jit(train_step), jax.jit(eval_step), optimizer, schedule)


def make_step_fns(potential: Potential, config: TrainConfig, steps_per_epoch: int, compute_stress: bool) -> StepFns:
    """``train_step(state, batch) -> (state, aux)`` and ``eval_step(params, batch) -> sums`` for
    ``potential``: :func:`compiled_steps` with the potential's normalisation bound as ``norm``."""
    settings = dataclasses.replace(StepSettings.from_config(config, steps_per_epoch),
                                   loss_sigma=potential.energy_scale_mean)
    fns = compiled_steps(potential.definition, settings, bool(compute_stress), bool(jax.config.jax_enable_x64))
    norm = potential.variables_with(None)
    train_step, eval_step = fns.train_step, fns.eval_step
    return fns._replace(train_step=lambda state, batch: train_step(state, batch, norm),
                        eval_step=lambda params, batch: eval_step(params, batch, norm))


def make_member_step(potential: Potential, config: TrainConfig, steps_per_epoch: int, compute_stress: bool) -> StepFns:
    """A full ensemble's ``train_step(state, batch, active)`` (:func:`compiled_member_steps` of one
    member's architecture, with the members' normalisation bound); ``eval_step`` is one member's."""
    settings = dataclasses.replace(StepSettings.from_config(config, steps_per_epoch),
                                   loss_sigma=potential.energy_scale_mean)
    member = potential.definition.member
    fns = compiled_member_steps(member, settings, bool(compute_stress), bool(jax.config.jax_enable_x64))
    norm = potential.variables_with(None)
    train_step = fns.train_step
    return fns._replace(train_step=lambda state, batch, active: train_step(state, batch, norm, active))


def init_state(potential: Potential, optimizer, plateau, learning_rate: float = 1.0) -> TrainState:
    """The state before the first step: the potential's parameters (and a copy as the EMA)."""
    params = potential.params
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree_util.tree_map(jnp.array, params),
        opt_state=optimizer.init(params),
        lr_scale=jnp.asarray(learning_rate, jnp.float32),
        plateau_state=plateau.init(jnp.zeros((), jnp.float32)),
    )


@compiled(maxsize=8)
def compiled_member_steps(member: PotentialDef, settings: StepSettings, compute_stress: bool, x64: bool) -> StepFns:
    """A full ensemble's jitted training step: the single-model ``train_step`` of
    :func:`compiled_steps` vmapped over a leading member axis, one compilation for all members.

    ``train_step(state, batch, norm, active) -> (state, aux)``: ``state``, ``batch`` (each member its
    own batch: own data order, own bootstrap sample), ``norm`` carry the member axis ``[M, ...]``;
    ``active`` [M] bool: a member whose epoch has run out of batches keeps its state unchanged (members
    may need different numbers of batches per epoch). ``eval_step`` is ``compiled_steps``' own for one
    member; the ensemble is evaluated as the mean model through :func:`compiled_steps` of its
    :class:`mlpjax.ensemble.EnsembleDef`."""
    fns = compiled_steps(member, settings, compute_stress, x64)

    def train_step(state: TrainState, batch: GraphBatch, norm: PotentialParams, active):
        def one(s, b, n, a):
            new, aux = fns.train_step(s, b, n)
            return jax.tree_util.tree_map(lambda x, y: jnp.where(a, x, y), new, s), aux

        return jax.vmap(one)(state, batch, norm, active)

    return fns._replace(train_step=jax.jit(train_step))


def init_member_states(member_params, optimizer, plateau, learning_rate: float, members: int) -> TrainState:
    """Member-stacked :class:`TrainState` (leaves ``[M, ...]``) around member-stacked parameters."""
    from types import SimpleNamespace

    del members  # the leading axis of member_params
    return jax.vmap(lambda p: init_state(SimpleNamespace(params=p), optimizer, plateau, learning_rate))(member_params)

