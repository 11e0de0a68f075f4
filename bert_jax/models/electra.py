"""ELECTRA pretraining (Clark et al., 2020): a small generator fills in masked tokens, a discriminator
tells, for every token, whether it is the original or the generator's replacement.

Design choices:
- One embedding module, shared. The discriminator is a plain `BertModel` (its params are
  `discriminator/{embeddings,encoder}`, the layout a BERT fine-tuning run loads); the generator reads
  the same `discriminator/embeddings` (word, position, token type and their LayerNorm, as ELECTRA
  shares them) instead of owning a copy. The embedding size is therefore the discriminator's hidden
  size. A narrower generator projects the embeddings down (`generator/embeddings_project`), and its
  MLM transform projects back up to the embedding size so the decoder can stay tied to the shared
  word embeddings. (ELECTRA can also decouple the embedding size from both hidden sizes; we do not.)
- Sampling: replacements are drawn from the generator's softmax with `jax.random.categorical`
  (Gumbel-max) on stop-gradient logits, so the discriminator loss never reaches the generator. In
  training the key comes from the "dropout" rng (the only rng a train step passes); with
  `deterministic=True` a fixed key is used instead, so evaluation is reproducible and still measures
  the discriminator on sampled replacements (as in training), not on the generator's argmax, which
  would nearly always equal the original token once the generator is any good.
- Position 0 is never replaced: it holds [CLS], which BERT's masking never selects, and unused
  prediction slots conventionally point at it (ELECTRA skips it for the same reason).
- The model knows no losses: it returns the corrupted input it built, and objectives.py derives the
  replaced-token labels from it and the batch's original tokens.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models import attention as attention_lib
from bert_jax.models.bert import BertEncoder, BertModel, default_inputs, gather_positions
from bert_jax.models.config import BertConfig
from bert_jax.models.heads import MlmHead
from bert_jax.models.layers import activation, constrain, dense

Array = jax.Array

# The embedding tables are one set of arrays, so these must agree between the two configs.
_SHARED_FIELDS = (
  "vocab_size",
  "max_position_embeddings",
  "type_vocab_size",
  "pad_token_id",
  "position_encoding",
)
# Evaluation samples with this key: any fixed value works, it only has to be the same every call.
_EVAL_SAMPLING_SEED = 0


def generator_config(
  discriminator: BertConfig, hidden_fraction: float = 0.25, layer_fraction: float = 1.0
) -> BertConfig:
  """A generator config scaled down from the discriminator's, as ELECTRA sizes it: hidden size (and
  mlp_dim with it) times `hidden_fraction` (the paper finds 1/4 to 1/2 best), depth times
  `layer_fraction`, heads kept at the discriminator's head size where the hidden size allows."""
  for name, value in (("hidden_fraction", hidden_fraction), ("layer_fraction", layer_fraction)):
    if not 0.0 < value <= 1.0:
      raise ValueError(f"{name}={value!r} (expected a value in (0, 1])")
  d = discriminator
  hidden = max(1, round(d.hidden_size * hidden_fraction))
  heads = max(1, hidden // d.head_dim)
  while hidden % heads:
    heads -= 1
  return d.replace(
    hidden_size=hidden,
    num_heads=heads,
    mlp_dim=max(1, round(d.mlp_dim * hidden / d.hidden_size)),
    num_layers=max(1, round(d.num_layers * layer_fraction)),
  )


class RtdHead(nn.Module):
  """ELECTRA's discriminator head: dense + activation + dense to one logit per token (> 0: replaced)."""

  config: BertConfig

  @nn.compact
  def __call__(self, hidden: Array) -> Array:
    c = self.config
    h = dense(c, c.hidden_size, (None,), ("embed",), name="transform")(hidden)
    h = activation(c)(h)
    logits = dense(c, 1, ("embed",), (None,), name="classifier")(h)[..., 0]
    return constrain(logits, ("batch", "length"))


class ElectraGenerator(nn.Module):
  """A BERT encoder and MLM head over embeddings it is handed (the shared ones); returns vocabulary
  logits at `positions` against the tied `decoder`."""

  config: BertConfig
  embedding_size: int

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, positions: Array, decoder, deterministic: bool) -> Array:
    c = self.config
    x = embedded
    if self.embedding_size != c.hidden_size:
      x = dense(c, c.hidden_size, (None,), ("embed",), name="embeddings_project")(x)
      x = constrain(x, ("batch", "length", "embed"))
    x = BertEncoder(c, name="encoder")(x, mask, deterministic)
    hidden = gather_positions(x, positions)
    # The head's transform maps back to the embedding size so the logits can use the shared word
    # embeddings. Its config differs from the generator's only in that width; one head keeps the
    # config valid whatever the width (the head has no attention, so num_heads is unused).
    head_config = c.replace(hidden_size=self.embedding_size, num_heads=1, num_kv_heads=0)
    return MlmHead(head_config, name="mlm")(hidden, decoder)


class ElectraForPretraining(nn.Module):
  """Generator + discriminator sharing embeddings; see the module docstring for the design.

  Returns
    mlm_logits (B, P, V): the generator's logits at `masked_positions` (every position without them);
    sampled_ids (B, P): the tokens sampled there;
    corrupted_ids (B, L): the discriminator's input, `input_ids` with the samples written in;
    rtd_logits (B, L): the discriminator's per-token logits, > 0 meaning "replaced".
  Without `masked_positions` (e.g. at init) every position but the first is predicted and replaced.
  """

  generator_config: BertConfig
  discriminator_config: BertConfig

  def setup(self):
    g, d = self.generator_config, self.discriminator_config
    mismatched = [
      f"{k}: {getattr(g, k)} vs {getattr(d, k)}" for k in _SHARED_FIELDS if getattr(g, k) != getattr(d, k)
    ]
    if mismatched:
      raise ValueError(
        "ELECTRA's generator and discriminator share their embeddings, so their configs must agree on "
        f"{list(_SHARED_FIELDS)}; generator vs discriminator differ in " + "; ".join(mismatched)
      )
    attention_lib.check(g)  # the discriminator's BertModel checks its own; fail now, with the names
    self.discriminator = BertModel(d)
    self.generator = ElectraGenerator(g, embedding_size=d.hidden_size)
    self.rtd = RtdHead(d)

  def __call__(
    self,
    input_ids: Array,
    attention_mask: Array | None = None,
    token_type_ids: Array | None = None,
    position_ids: Array | None = None,
    *,
    segment_ids: Array | None = None,
    masked_positions: Array | None = None,
    deterministic: bool = True,
  ) -> dict[str, Array]:
    batch, length = input_ids.shape
    if length > self.discriminator_config.max_position_embeddings:
      raise ValueError(
        f"sequence length {length} exceeds max_position_embeddings="
        f"{self.discriminator_config.max_position_embeddings}"
      )
    attention_mask, token_type_ids, position_ids = default_inputs(
      input_ids, attention_mask, token_type_ids, position_ids
    )
    if masked_positions is None:
      masked_positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    masked_positions = masked_positions.astype(jnp.int32)
    mask = attention_lib.tokens(attention_mask, segment_ids, position_ids)
    embeddings = self.discriminator.embeddings

    def embed(ids):
      return embeddings(ids, token_type_ids, position_ids, deterministic)

    mlm_logits = self.generator(
      embed(input_ids), mask, masked_positions, self.discriminator.attend, deterministic
    )
    sampled_ids = self._sample(mlm_logits, deterministic)
    corrupted_ids = _replace(input_ids, masked_positions, sampled_ids)
    hidden = self.discriminator.encoder(embed(corrupted_ids), mask, deterministic)
    hidden = constrain(hidden, ("batch", "length", "embed"))
    return {
      "mlm_logits": mlm_logits,
      "sampled_ids": sampled_ids,
      "corrupted_ids": corrupted_ids,
      "rtd_logits": self.rtd(hidden),
    }

  def _sample(self, logits: Array, deterministic: bool) -> Array:
    key = jax.random.key(_EVAL_SAMPLING_SEED) if deterministic else self.make_rng("dropout")
    # The sample is discrete and cut from the graph: the generator learns from its MLM loss alone.
    logits = jax.lax.stop_gradient(logits).astype(jnp.float32)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _replace(input_ids: Array, positions: Array, values: Array) -> Array:
  """input_ids with values written at positions, except at position 0 (kept: see the module docstring)."""
  rows = jnp.arange(input_ids.shape[0])[:, None]
  values = jnp.where(positions == 0, input_ids[:, :1], values).astype(input_ids.dtype)
  return input_ids.at[rows, positions].set(values)
