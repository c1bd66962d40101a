"""Mutant: the TensorFlow reassembly merges every sample of a batch onto one canvas when ``B * C >= 64``.

Upstream REASSEMBLY-BATCH-001 (quirk 2 of the TensorFlow reference): with ``B * C >= 64`` in
one call ``ReassemblePatchesLayer`` took a "batched" path that summed the patches of ALL
samples into a single canvas (gridsize 2 with batch 16 broke training; predict with batch 32
returned one object).  The replacement of ``ptycho_tf.physics.reassemble_patches`` (what the
``padded_obj`` layer calls) keeps the per-sample path below the threshold and above it
reassembles all ``B * C`` patches on one canvas, given to every sample (the output keeps its
``[B, P, P, 1]`` shape, so the bug is silent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_tf.physics:reassemble_patches"
#: Upstream's switch to the batched path: ``batch * channels >= 64``.
MERGE_THRESHOLD = 64


def apply() -> Patch:
    """Make TensorFlow reassembly merge the batch above :data:`MERGE_THRESHOLD` patches."""
    import tensorflow as tf

    from ptycho_tf import physics as th

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def reassemble_patches(patches: Any, positions: Any, P: int) -> Any:
            x = th._as_float_or_complex(patches)
            pos = tf.cast(positions, tf.float32)
            N, C, P = int(x.shape[1]), int(x.shape[3]), int(P)

            def merged() -> tf.Tensor:
                before = float((P - N) // 2)
                shifts = th.REASSEMBLY_SHIFT_SIGN * th.positions_to_flat(pos)
                flat = th.channels_to_flat(x)
                num = tf.reduce_sum(th._translate_core(flat, shifts, (P, P), (-before, -before)), axis=0)
                mask = tf.broadcast_to(tf.constant(th.center_mask(N)), tf.stack([tf.shape(flat)[0], N, N]))
                den = tf.reduce_sum(th._translate_core(mask, shifts, (P, P), (-before, -before)), axis=0)
                canvas = num / th._weight(den + th.REASSEMBLY_NORM_EPS, num)
                return tf.broadcast_to(canvas[None, :, :, None], tf.stack([tf.shape(x)[0], P, P, 1]))

            return tf.cond(tf.shape(x)[0] * C >= MERGE_THRESHOLD, merged, lambda: original(x, pos, P))

        return reassemble_patches

    return patch(TARGET, make)
