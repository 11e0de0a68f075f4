"""crc32c (Castagnoli) in numpy, fast enough for a 1.3 GB checkpoint, and the CRC masking TF (like LevelDB)
stores; tf_checkpoint.py and tf_index.py check every block and tensor they read with it.

TF checksums both the SSTable blocks and every tensor's bytes with crc32c, which neither zlib nor
numpy provides. A byte-at-a-time Python loop manages a few MB/s, far too slow for BERT-large's
1.3 GB, so the data is cut into many equal lanes whose CRCs are advanced together, one 32-bit
word of every lane per numpy step, and then merged: CRC is linear over GF(2), so crc(A + B) is
crc(A) pushed through len(B) zero bytes, xor crc(B) started from zero. Pushing through zero
bytes is a 32x32 bit matrix, applied to many values at once through four 256-entry tables (one
per input byte).
"""

from __future__ import annotations

import functools

import numpy as np

_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_byte_tables() -> list[np.ndarray]:
  # tables[0] advances the register over one byte; tables[k] gives the effect of a byte followed
  # by k zero bytes, so four of them consume a little-endian 32-bit word in one step.
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> 1) ^ np.uint32(_CRC32C_POLY), table >> 1).astype(np.uint32)
  tables = [table]
  for _ in range(3):
    tables.append((tables[-1] >> 8) ^ table[tables[-1] & 0xFF])
  return tables


_WORD_TABLES = _make_byte_tables()
_BYTE_TABLE = _WORD_TABLES[0]


class _ZeroShift:
  """The linear map "advance a CRC register over n zero bytes", as four byte-lookup tables."""

  def __init__(self, columns: np.ndarray):
    # columns[i] is the image of bit i; tables[k][b] is the image of byte b placed at byte k.
    self.columns = columns
    bits = (np.arange(256, dtype=np.uint32)[:, None] >> np.arange(8, dtype=np.uint32)) & 1
    self.tables = []
    for k in range(4):
      masked = np.where(bits.astype(bool), columns[8 * k : 8 * k + 8][None, :], np.uint32(0))
      self.tables.append(np.bitwise_xor.reduce(masked, axis=1).astype(np.uint32))

  def __call__(self, x):
    t = self.tables
    return t[0][x & 0xFF] ^ t[1][(x >> 8) & 0xFF] ^ t[2][(x >> 16) & 0xFF] ^ t[3][(x >> 24) & 0xFF]

  def then(self, other: _ZeroShift) -> _ZeroShift:
    """This shift followed by `other`."""
    return _ZeroShift(other(self.columns))


@functools.cache
def _zero_shift_pow2(k: int) -> _ZeroShift:
  """Advance over 2**k zero bytes."""
  if k == 0:
    bits = np.uint32(1) << np.arange(32, dtype=np.uint32)
    return _ZeroShift((_BYTE_TABLE[bits & 0xFF] ^ (bits >> 8)).astype(np.uint32))
  half = _zero_shift_pow2(k - 1)
  return half.then(half)


@functools.lru_cache(maxsize=256)
def _zero_shift(n: int) -> _ZeroShift:
  result = None
  for k in range(n.bit_length()):
    if n >> k & 1:
      step = _zero_shift_pow2(k)
      result = step if result is None else result.then(step)
  if result is None:
    return _ZeroShift(np.uint32(1) << np.arange(32, dtype=np.uint32))
  return result


def _crc_register(data: np.ndarray) -> int:
  """CRC register after `data` (uint8), started from zero, with no final xor."""
  n = data.size
  if n < 256:
    crc = 0
    for byte in data.tolist():
      crc = int(_BYTE_TABLE[(crc ^ byte) & 0xFF]) ^ (crc >> 8)
    return crc
  # Lanes are a power of two (so they merge pairwise) and at least 8 words long, so that small
  # tensors do not pay for thousands of tiny numpy calls; 2**16 lanes measured fastest.
  lanes = 1 << min(16, (n // 32).bit_length() - 1)
  lane_words = n // (4 * lanes)
  main = lanes * lane_words * 4
  columns = np.ascontiguousarray(data[:main].view("<u4").reshape(lanes, lane_words).T)
  t0, t1, t2, t3 = _WORD_TABLES
  regs = np.zeros(lanes, dtype=np.uint32)
  for column in columns:
    regs ^= column
    regs = t3[regs & 0xFF] ^ t2[(regs >> 8) & 0xFF] ^ t1[(regs >> 16) & 0xFF] ^ t0[regs >> 24]
  span = 4 * lane_words
  while regs.size > 1:
    regs = _zero_shift(span)(regs[0::2]) ^ regs[1::2]
    span *= 2
  crc = int(regs[0])
  tail = data[main:]
  if tail.size:
    crc = int(_zero_shift(tail.size)(np.uint32(crc))) ^ _crc_register(tail)
  return crc


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
  """Standard crc32c (initial value and final xor 0xFFFFFFFF), as TF computes it."""
  if isinstance(data, np.ndarray):
    buf = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
  else:
    buf = np.frombuffer(data, dtype=np.uint8)
  start = int(_zero_shift(buf.size)(np.uint32(0xFFFFFFFF)))
  return (start ^ _crc_register(buf) ^ 0xFFFFFFFF) & 0xFFFFFFFF


def _unmask_crc(masked: int) -> int:
  # TF (like LevelDB) stores CRCs rotated and offset, because a CRC of data that itself contains
  # CRCs is weak; undo that before comparing.
  rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
  return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
