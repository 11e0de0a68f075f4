"""Optimizers (optax): AdamW as BERT trained, LAMB for large batches; linear warmup then linear decay;
no weight decay on biases and LayerNorm; global-norm clipping."""

from __future__ import annotations

import jax
import optax


def schedule(learning_rate: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then linear decay to 0 at `total_steps` (BERT's schedule)."""
  warmup = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  decay = optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup_steps, 1))
  return optax.join_schedules([warmup, decay], [warmup_steps])


def decay_mask(params):
  """True where weight decay applies: kernels and embeddings; not biases or LayerNorm scales."""

  def decays(path, _):
    names = [getattr(k, "key", None) for k in path]
    name = next((n for n in reversed(names) if isinstance(n, str)), "")
    return name not in ("bias", "scale", "output_bias")

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config, total_steps: int | None = None) -> optax.GradientTransformation:
  """config: name (adamw | lamb), learning_rate, warmup_steps, b1, b2, eps, weight_decay, grad_clip
  (0 disables), and total_steps unless given. Gradient accumulation happens in the train step
  (train_state.train_step_fn), so one optimizer step is one global batch."""
  total_steps = config.total_steps if total_steps is None else total_steps
  if config.warmup_steps > total_steps:
    raise ValueError(f"optimizer.warmup_steps={config.warmup_steps} exceeds the run's {total_steps} steps")
  lr = schedule(config.learning_rate, config.warmup_steps, total_steps)
  if config.name == "adamw":
    opt = optax.adamw(
      lr, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay, mask=decay_mask
    )
  elif config.name == "lamb":
    opt = optax.lamb(
      lr, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay, mask=decay_mask
    )
  else:
    raise ValueError(f"unknown optimizer {config.name!r}; known: ['adamw', 'lamb']")
  if config.grad_clip:
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip), opt)
  return opt
